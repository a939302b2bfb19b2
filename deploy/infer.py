"""Classify images or video frames with an exported model: ``python -m deploy.infer MODEL INPUTS...``.

MODEL is a TensorRT engine (``.engine``/``.plan``, read with its sidecar) or an ONNX model, which runs through
ONNX Runtime, so the same command works on a laptop; ``--trt`` builds an engine from the ONNX model on first
use and caches it (deploy.trt.engine_cache). INPUTS are image files or folders; ``--video``, ``--camera`` and
``--gst`` (a GStreamer pipeline, e.g. a Jetson CSI camera) read frames through OpenCV when it is installed.

Every image goes through the model's own preprocessing, read from its metadata (or the engine's sidecar).
Output: the top-k classes per image, with ImageNet names for 1000-class models (``--labels`` overrides).
With ``--json``: one JSON object per line and image ({"path", "topk", "names", "probs"}, softmax
probabilities), then one last line {"summary": {...}} with the latency record of deploy.runners.execution
(runs, batch_size, mean_ms, min_ms, max_ms, p50_ms, p90_ms, p95_ms, p99_ms, images_per_s, spread, unstable), on stdout
(notes go to stderr). On a folder of class folders (an ImageFolder tree) each image also gets its "label" and the
summary top-1/top-5 "accuracy". A provider asked for with --providers that does not run is a one-line warning, or
with --strict-providers an error. Options may come before or after the inputs. Latency is the runner's time per
batch (end to end; for TensorRT also GPU compute alone), after one untimed warm-up run of the first batch;
preprocessing is not included. On a Jetson the summary adds the power
mode (nvpmodel) and, with jetson-stats installed, the board's power draw.

deploy/ needs only numpy and Pillow (plus onnxruntime, or JetPack's TensorRT), so this uses argparse.
"""
import argparse
import os
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .cliutil import add_providers_argument, note, run_main
from .compare import describe_images, nonfinite_rows, topk_indices
from .errors import CheckFailedError, MissingDependencyError, UserError
from .filekind import is_regular_file
from .images import collect_images, ignored_note, is_image_file, walk_images
from .metadata import read_model_info
from .preprocess import PreprocessSpec, decode_image, preprocess_image
from .schema import dumps_strict
from .runners.execution import (Clocks, artifact_kind, check_fixed_batch_memory, fixed_batch_size, infer_batch,
                                input_name as image_input, latency_record, output_name, warm_up)
from .names import read_label_names, terminal_text
from .text import is_ascii_number
from .validate import MAX_BATCH, check_batch_memory, check_bound, check_outputs_spare_inputs

IMAGENET_CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "imagenet_classes.tsv")


# -- labels and scores ------------------------------------------------------------------------------------------

def bundle_labels(model_path: str) -> Optional[str]:
    """The class names a bundle carries beside its models (``labels.txt``), used when --labels is not given."""
    from .manifest import CLASS_NAMES_FILE, MANIFEST
    folder = os.path.dirname(os.path.abspath(model_path))
    path = os.path.join(folder, CLASS_NAMES_FILE)
    return path if os.path.isfile(os.path.join(folder, MANIFEST)) and os.path.isfile(path) else None


def load_labels(num_classes: int, labels_path: Optional[str] = None) -> Optional[List[str]]:
    """Class names: from ``labels_path`` (one per line), ImageNet's for 1000 classes, else None (indices)."""
    if labels_path:
        names = read_label_names(labels_path)
        if len(names) != num_classes:
            raise UserError("labels file {} has {} names but the model has {} classes".format(
                labels_path, len(names), num_classes))
        return names
    if num_classes == 1000:
        with open(IMAGENET_CLASSES, "r", encoding="utf-8") as handle:
            # "<synset>\t<names>"; the first of the comma-separated names is the one people know
            return [line.split("\t", 1)[1].split(",")[0].strip() for line in handle.read().splitlines()]
    return None


def imagenet_synsets() -> List[str]:
    with open(IMAGENET_CLASSES, "r", encoding="utf-8") as handle:
        return [line.split("\t", 1)[0].strip() for line in handle.read().splitlines() if line.strip()]


def folder_class_indices(folders: List[str], num_classes: int,
                         names: Optional[List[str]]) -> Optional[Dict[str, int]]:
    """Class index per class-folder name, or None when the folders cannot be matched to the model's classes.

    In order: ImageNet synsets (1000-class models), the model's class names (``--labels`` or ImageNet's), the
    sorted folder order when there is one folder per class (torchvision's ImageFolder, as calibrate reads
    ``--data``), and folder names that are class indices.
    """
    tables = [imagenet_synsets()] if num_classes == 1000 else []
    tables += [names] if names else []
    for table in tables:
        index = {name: i for i, name in enumerate(table)}
        if all(folder in index for folder in folders):
            return {folder: index[folder] for folder in folders}
    if len(folders) == num_classes:
        return {folder: i for i, folder in enumerate(sorted(folders))}
    if all(is_ascii_number(folder) and int(folder) < num_classes for folder in folders):
        return {folder: int(folder) for folder in folders}
    return None


def ground_truth(inputs: Sequence[str], num_classes: int, names: Optional[List[str]]) -> Tuple[Dict[str, int],
                                                                                              List[str]]:
    """({image path: class index} for the inputs that are ImageFolder trees, notes on trees left unscored)."""
    truth, notes = {}, []
    for item in inputs:
        if not os.path.isdir(item):
            continue
        entries = sorted(os.listdir(item))
        if any(is_image_file(e) and is_regular_file(os.path.join(item, e)) for e in entries):
            continue  # images at the top: a plain folder, not class folders
        folders = [e for e in entries if not e.startswith(".") and os.path.isdir(os.path.join(item, e))]
        mapping = folder_class_indices(folders, num_classes, names) if folders else None
        if mapping is None:
            if folders:
                notes.append("{}: its {} class folders match neither the model's {} class names nor its class "
                             "indices, so no accuracy is given (pass --labels with the class names)".format(
                                 item, len(folders), num_classes))
            continue
        for folder in folders:
            for path in walk_images(os.path.join(item, folder)):
                truth[path] = mapping[folder]
    return truth, notes


def accuracy(hits: Sequence[Tuple[bool, bool]]) -> Optional[Dict[str, float]]:
    """Top-1 and top-5 accuracy over (top-1 hit, top-5 hit) pairs."""
    if not hits:
        return None
    return {"images": len(hits), "top1": float(np.mean([h[0] for h in hits])),
            "top5": float(np.mean([h[1] for h in hits]))}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


# -- frames -----------------------------------------------------------------------------------------------------

def bgr_to_pil(frame: np.ndarray):
    """An OpenCV frame (BGR, or gray) as the RGB PIL image the shared preprocessing expects."""
    from PIL import Image
    if frame.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(frame)).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(frame[:, :, 2::-1]))


def image_frames(inputs: Sequence[str], resize_size: Optional[int] = None) -> Iterator[Tuple[str, object]]:
    ignored: List[str] = []
    paths = collect_images(inputs, ignored)
    if ignored_note(ignored):
        note(ignored_note(ignored))
    if not paths:
        raise UserError("no images found in {}".format(", ".join(inputs)))
    for path in paths:
        try:
            yield path, decode_image(path, resize_size)
        except UserError as exc:
            note("skipping: {}".format(exc))


def _import_cv2(option: str):
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("OpenCV (cv2)", "read {}".format(option),
                                     "pip install opencv-python; on Jetson use JetPack's python3-opencv, which has "
                                     "GStreamer") from None
    return cv2


def capture_frames(args) -> Iterator[Tuple[str, object]]:
    if args.gst:
        cv2 = _import_cv2("--gst")
        capture, label = cv2.VideoCapture(args.gst, cv2.CAP_GSTREAMER), "gst"
        hint = "; check that the pipeline ends in appsink and that OpenCV was built with GStreamer"
    elif args.camera is not None:
        cv2 = _import_cv2("--camera")
        capture, label, hint = cv2.VideoCapture(int(args.camera)), "camera{}".format(args.camera), ""
    else:
        if not os.path.isfile(args.video):
            raise UserError("no such video file: {}".format(args.video))
        cv2 = _import_cv2("--video")
        capture, label, hint = cv2.VideoCapture(args.video), args.video, ""
    if not capture.isOpened():
        raise UserError("OpenCV cannot open {}{}".format(label, hint))
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            yield "{}#{}".format(label, index), bgr_to_pil(frame)
            index += 1
    finally:
        capture.release()


def limited(frames: Iterator, max_frames: Optional[int]) -> Iterator:
    for count, item in enumerate(frames):
        if max_frames is not None and count >= max_frames:
            break
        yield item


def batched(frames: Iterator, size: int) -> Iterator[List]:
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- runners ----------------------------------------------------------------------------------------------------

def _trt_engine_for(args) -> str:
    from .trt.build import BuildOptions
    from .trt.engine_cache import ensure_engine
    from .onnx_info import inspect_onnx
    from .trt.profiles import is_dynamic

    inputs = inspect_onnx(args.model).inputs
    dynamic = any(shape and is_dynamic(shape[0]) for shape in inputs.values())
    batch = args.batch or 1
    options = BuildOptions(min_batch=1 if dynamic else None, opt_batch=batch if dynamic else None,
                           max_batch=batch if dynamic else None, dla_core=args.dla_core,
                           gpu_fallback=args.dla_core is not None)
    engine, _ = ensure_engine(args.model, options, cache_dir=args.engine_cache, log=note)
    return engine


def open_runner(args):
    """(runner, path whose metadata describes the model)."""
    path = args.model
    if not os.path.isfile(path):
        raise UserError("no such model file: {}".format(path))
    if artifact_kind(path) == "onnx":
        if not args.trt:
            from .runners.onnxruntime import OnnxRuntimeRunner
            if args.cuda_graph:
                note("--cuda-graph applies to TensorRT engines only; ignored for ONNX Runtime")
            providers = args.providers
            return OnnxRuntimeRunner(path, providers=providers, require_requested=args.strict_providers), path
        path = _trt_engine_for(args)
    from .runners.tensorrt import TensorRTRunner
    return TensorRTRunner(path, use_cuda_graph=args.cuda_graph), path


def choose_batch(runner, requested: Optional[int]) -> Tuple[str, int, bool]:
    """(input name, batch size, static) for the model's single image input."""
    from .trt.profiles import check_input_shape

    inputs = runner.get_input_metadata()
    if len(inputs) != 1:
        raise UserError("expected a classifier with one image input, the model has {}".format(sorted(inputs)))
    name = image_input(runner)
    meta = inputs[name]
    fixed = fixed_batch_size(runner, name)
    if fixed:
        check_fixed_batch_memory(runner, fixed)
        if requested is not None and requested != fixed:
            note("the model has a static batch of {}; using it instead of --batch {}".format(fixed, requested))
        return name, fixed, True
    batch = requested or 1
    profile = runner.profile(name) if hasattr(runner, "profile") else None
    if profile is not None:
        engine_shape = tuple(-1 if dim is None else dim for dim in meta.shape)
        check_input_shape(name, engine_shape, (batch,) + tuple(profile[2][1:]), profile)
    return name, batch, False


# -- the run ----------------------------------------------------------------------------------------------------

def classify(runner, frames: Iterator, spec: PreprocessSpec, input_name: str, batch_size: int, static: bool,
             k: int, labels: Optional[List[str]], timed: Optional[List[Clocks]] = None
             ) -> Iterator[Dict[str, object]]:
    """Per-image results. ``timed`` receives the Clocks of the timed batches: every batch, after one untimed
    warm-up run of the first."""
    timed = [] if timed is None else timed
    output, pad_to = output_name(runner), batch_size if static else None
    # Each image is preprocessed as it arrives, so a batch holds S x S crops, never N decoded photos.
    crops = ((name, preprocess_image(image, spec)) for name, image in frames)
    for batch in batched(crops, batch_size):
        names = [name for name, _ in batch]
        array = np.stack([crop for _, crop in batch]).astype(np.float32, copy=False)
        if not timed:  # the first run pays for lazy initialization; it is not timed
            warm_up(runner, array, 1, pad_to)
            timed.append(Clocks(runner))
        logits = infer_batch(runner, array, pad_to, input_name)[output].reshape(len(batch), -1)
        # A NaN or infinite logit makes every probability NaN ("nan%" for each class): that image has no result.
        broken = set(int(row) for row in nonfinite_rows(logits))
        probabilities = softmax(np.where(np.isfinite(logits), logits, 0.0) if broken else logits)
        for row, name in enumerate(names):
            if row in broken:
                yield {"path": name, "error": NONFINITE_RESULT}
                continue
            indices = [int(i) for i in topk_indices(probabilities[row], k)]
            yield {"path": name, "topk": indices,
                   "names": [labels[i] if labels else str(i) for i in indices],
                   "probs": [round(float(probabilities[row][i]), 6) for i in indices]}


NONFINITE_RESULT = "the model's outputs hold NaN or infinite values"


def _print_result(result: Dict[str, object], as_json: bool) -> None:
    if as_json:
        print(dumps_strict(result, note), flush=True)
        return
    if "error" in result:  # named again in the one error line at the end; stdout shows no number for it
        print("{}\n  no result: {}".format(result["path"], result["error"]))
        return
    print(terminal_text(result["path"]))  # a file or class named with escape codes cannot rewrite the terminal
    for rank, (index, name, prob) in enumerate(zip(result["topk"], result["names"], result["probs"]), 1):
        label = name if name == str(index) else "{} ({})".format(terminal_text(name), index)
        print("  {}. {:6.2%}  {}".format(rank, prob, label))


def _print_summary(summary: Dict[str, object]) -> None:
    runner = summary["runner"]
    extra = runner.get("providers") or runner.get("device") or ""
    if isinstance(extra, list):
        extra = ", ".join(str(item) for item in extra)
    elif isinstance(extra, dict):
        extra = "{} (sm {})".format(extra.get("name"), extra.get("compute_capability"))
    print("runner: {} {}".format(runner.get("backend"), extra).rstrip())
    scored = summary.get("accuracy")
    if scored:
        print("accuracy on {} labeled images: top-1 {:.2%}, top-5 {:.2%}".format(
            scored["images"], scored["top1"], scored["top5"]))
    latency = summary["latency"]
    if latency:
        print("{} images, {} timed batches of {}: latency mean {:.2f} ms, p50 {:.2f}, p90 {:.2f}, p99 {:.2f} ms{}; "
              "{:.1f} images/s at p50 (end to end per batch, preprocessing excluded, after 1 warm-up batch)".format(
                  summary["images"], latency["runs"], summary["batch_size"], latency["mean_ms"],
                  latency["p50_ms"], latency["p90_ms"], latency["p99_ms"],
                  " (unstable: p90/p50 {:.2f})".format(latency["spread"]) if latency["unstable"] else "",
                  latency["images_per_s"]))
    compute = summary.get("compute")
    if compute:
        print("GPU compute per batch: mean {:.2f} ms, p50 {:.2f}, p90 {:.2f}, p99 {:.2f} ms".format(
            compute["mean_ms"], compute["p50_ms"], compute["p90_ms"], compute["p99_ms"]))
    jetson = summary.get("jetson")
    if jetson:
        parts = [str(jetson.get("model") or "Jetson")]
        mode = jetson.get("power_mode")
        if mode:
            parts.append("power mode {}{}".format(mode.get("name"), " ({})".format(mode["id"]) if "id" in mode else ""))
        power = jetson.get("power")
        if power:
            parts.append("board power {:.1f} W (average {:.1f} W)".format(power["total_mw"] / 1000.0,
                                                                          power["average_mw"] / 1000.0))
        print("jetson: " + ", ".join(parts))


def warn_missing_providers(runner) -> None:
    """One line on stderr when ONNX Runtime runs without a provider that was asked for (--strict-providers:
    an error instead, raised by the runner)."""
    missing = getattr(runner, "missing_providers", None)
    if missing:
        print("warning: ONNX Runtime cannot run {} here; running on {} (--strict-providers makes this an "
              "error)".format(", ".join(missing), ", ".join(runner.active_providers)), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from .jetson import jetson_report

    sources = [bool(args.inputs), bool(args.video), args.camera is not None, bool(args.gst)]
    if sum(sources) != 1:
        raise UserError("give image files/folders, or exactly one of --video, --camera, --gst")
    for flag, value in (("--top-k", args.top_k), ("--batch", args.batch), ("--max-frames", args.max_frames)):
        if value is not None and value < 1:
            raise UserError("{} must be at least 1, got {}".format(flag, value))
    check_bound("--batch", args.batch, MAX_BATCH)
    if args.trt and args.engine_cache:  # engines written into an image folder would be read back as its files
        check_outputs_spare_inputs([("--engine-cache", args.engine_cache)],
                                   [("MODEL", args.model), ("INPUTS", list(args.inputs)), ("--labels", args.labels)])
    if args.dla_core is not None and not (args.trt and args.model.lower().endswith(".onnx")):
        raise UserError("--dla-core applies when --trt builds an engine from an .onnx model")
    runner, info_path = open_runner(args)
    info = read_model_info(info_path)
    labels = load_labels(info.num_classes, args.labels or bundle_labels(info_path))
    truth, truth_notes = ground_truth(args.inputs, info.num_classes, labels)
    for message in truth_notes:
        note(message)
    frames = image_frames(args.inputs, info.preprocess.resize_size) if args.inputs else capture_frames(args)
    with runner:
        warn_missing_providers(runner)
        input_name, batch_size, static = choose_batch(runner, args.batch)
        check_batch_memory(batch_size, info.preprocess.input_size, "--batch")
        images, hits, timed, broken = 0, [], [], []
        # with known classes, top-5 is always ranked (for the accuracy) and then cut to --top-k for printing
        ranked = max(args.top_k, 5) if truth else args.top_k
        for result in classify(runner, limited(frames, args.max_frames), info.preprocess, input_name, batch_size,
                               static, ranked, labels, timed):
            if "error" in result:
                broken.append(result["path"])
                _print_result(result, args.json)
                images += 1
                continue
            if result["path"] in truth:
                label = truth[result["path"]]
                hits.append((result["topk"][0] == label, label in result["topk"][:5]))
                result["label"] = label
            for key in ("topk", "names", "probs"):
                result[key] = result[key][:args.top_k]
            _print_result(result, args.json)
            images += 1
        if images == 0:
            raise UserError("no image could be classified")
        described = runner.describe()
        summary = {"model": args.model, "runner": described, "batch_size": batch_size, "images": images,
                   "latency": latency_record(timed[0].wall(), batch_size),
                   "compute": latency_record(timed[0].compute(), batch_size),
                   "accuracy": accuracy(hits)}
    for message in described.get("notes") or []:
        note(message)
    jetson = jetson_report()
    if jetson:
        summary["jetson"] = jetson
    if broken:
        summary["nonfinite_images"] = len(broken)
    if args.json:
        print(dumps_strict({"summary": summary}, note, default=str))
    else:
        _print_summary(summary)
    if broken:
        raise CheckFailedError("{}: {} for {}; no class was read from them (a NaN or infinite weight, or "
                               "preprocessing that overflows, e.g. a tiny std in the metadata)".format(
                                   args.model, NONFINITE_RESULT, describe_images(range(len(broken)), broken, images)))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.infer", description=__doc__.split("\n\n")[0],
        epilog="With --json, stdout holds one JSON line per image and a final {\"summary\": ...} line.")
    parser.add_argument("model", metavar="MODEL", help="TensorRT engine (.engine/.plan) or ONNX model (.onnx)")
    parser.add_argument("inputs", nargs="*", metavar="INPUTS", help="image files or folders (searched recursively)")
    parser.add_argument("--top-k", type=int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--batch", type=int, help="images per inference (default 1, or the model's static batch; "
                                                  "at most {})".format(MAX_BATCH))
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line (default: the bundle's "
                                                         "labels.txt beside the model, ImageNet's for 1000-class "
                                                         "models, else indices)")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout (see below)")
    parser.add_argument("--video", metavar="PATH", help="classify the frames of a video file (needs OpenCV)")
    parser.add_argument("--camera", type=int, metavar="N", help="classify frames of camera N (needs OpenCV)")
    parser.add_argument("--gst", metavar="PIPELINE", help="GStreamer pipeline ending in appsink, e.g. a Jetson CSI "
                                                          "camera (needs OpenCV with GStreamer)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N images or frames")
    parser.add_argument("--trt", action="store_true", help="with an .onnx model: build (first use) and run a cached "
                                                           "TensorRT engine")
    parser.add_argument("--engine-cache", metavar="DIR", help="where --trt keeps engines (default: beside the "
                                                              "model, else ~/.cache/eca-deploy/engines)")
    parser.add_argument("--dla-core", type=int, metavar="N", help="with --trt: build for this DLA core, with GPU "
                                                                  "fallback")
    parser.add_argument("--cuda-graph", action="store_true", help="TensorRT: replay the execution as a CUDA graph")
    add_providers_argument(parser, "an .onnx model")
    parser.add_argument("--strict-providers", action="store_true", help="exit 2 when a provider in --providers "
                                                                        "cannot run, instead of a warning")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # intermixed: options may come before, between or after the inputs (`MODEL --trt images/`)
    args = make_parser().parse_intermixed_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
