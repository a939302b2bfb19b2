"""Pack what a target device needs into one folder or tarball: ``cli.py bundle ARTIFACTS... -o DIR_OR_TAR``.

A bundle holds the ONNX models, each with a metadata sidecar ``<model>.onnx.json`` (so a Jetson without the
onnx package still reads its preprocessing), calibration caches and label files given among the artifacts, the
torch-free ``deploy/`` runtime, a README and ``build_engines.sh``. Engines are not bundled: they are tied to the
TensorRT version and GPU that build them, so the target builds its own (``python3 -m deploy.build``; the
equivalent trtexec lines for JetPack 6 and 5 are in the script's comments).

Both outputs are written atomically: the folder is assembled beside its destination and renamed into place,
the tarball (``.tar.gz``/``.tgz``) goes through ``deploy.fileio.atomic_path``.
"""
import os
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import UserError
from .fileio import atomic_path, sha256_file, write_json, write_text
from .reference import REFERENCE_FILE

DEPLOY_DIR = os.path.dirname(os.path.abspath(__file__))
MODEL_SUFFIXES = (".onnx",)
CACHE_SUFFIXES = (".cache", ".calib")
LABEL_SUFFIXES = (".txt", ".labels", ".names")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
TAR_SUFFIXES = (".tar.gz", ".tgz")
# What Jetsons run: the trtexec lines are written for these TensorRT versions.
TARGETS = (("JetPack 6, TensorRT 10.3", "10.3.0"), ("JetPack 5, TensorRT 8.5", "8.5.2"))
JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
IMAGENET_CLASSES = 1000   # only such models get deploy/samples, the ImageNet photos
SAMPLES_FOLDER = "samples"
CLASS_NAMES_FILE = "labels.txt"


@dataclass
class BundleResult:
    output: str
    kind: str  # "folder" or "tar.gz"
    models: List[str]
    caches: List[str]
    labels: List[str]
    files: List[str]
    build_commands: List[str]
    notes: List[str] = field(default_factory=list)
    reference: Optional[str] = None   # reference.npz, when the bundle carries PyTorch's logits
    samples: Optional[str] = None     # the folder of sample images the README runs on

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def classify_artifacts(artifacts: Sequence[str]) -> Tuple[List[str], List[str], List[str]]:
    """(models, calibration caches, label files); UserError for anything else."""
    if not artifacts:
        raise UserError("give at least one artifact (an ONNX model)")
    models, caches, labels, seen = [], [], [], {}
    for path in (os.fspath(a) for a in artifacts):
        if not os.path.isfile(path):
            raise UserError("no such file: {}".format(path))
        name, lower = os.path.basename(path), path.lower()
        if name in seen:
            raise UserError("{} and {} have the same file name; a bundle is one flat folder".format(seen[name], path))
        seen[name] = path
        if lower.endswith(MODEL_SUFFIXES):
            models.append(path)
        elif lower.endswith(CACHE_SUFFIXES):
            caches.append(path)
        elif lower.endswith(LABEL_SUFFIXES):
            labels.append(path)
        elif lower.endswith(ENGINE_SUFFIXES):
            raise UserError("{} is a TensorRT engine: engines only run on the TensorRT version and GPU that built "
                            "them, so bundle its ONNX model and build on the target".format(path))
        else:
            raise UserError("{}: cannot bundle this kind of file; give ONNX models ({}), calibration caches ({}) "
                            "and label files ({})".format(path, ", ".join(MODEL_SUFFIXES), ", ".join(CACHE_SUFFIXES),
                                                          ", ".join(LABEL_SUFFIXES)))
    if not models:
        raise UserError("a bundle needs at least one ONNX model")
    return models, caches, labels


def model_sidecar(path: str) -> Dict[str, object]:
    """What the target needs to know without the onnx package: metadata, input shapes, precision, sha256."""
    from .metadata import read_onnx_metadata
    from .trt.onnx_info import inspect_onnx

    info = inspect_onnx(path)
    return {"metadata": read_onnx_metadata(path),
            "inputs": {name: list(shape) for name, shape in info.inputs.items()},
            "precision": info.precision.to_dict(), "sha256": sha256_file(path)}


def _build_options(path: str, sidecar: Dict[str, object], caches: List[str], max_batch: Optional[int], notes):
    from .trt.build import BuildOptions
    from .trt.profiles import is_dynamic

    dynamic = any(shape and is_dynamic(shape[0]) for shape in sidecar["inputs"].values())
    if max_batch is not None and not dynamic:
        notes.append("{} has a static batch; --max-batch is not used for it".format(os.path.basename(path)))
    calib = None
    if len(caches) == 1 and not sidecar["precision"]["qdq"]:
        calib = os.path.basename(caches[0])
    return BuildOptions(max_batch=max_batch if dynamic else None, calib_cache=calib)


def build_lines(path: str, sidecar: Dict[str, object], options) -> List[str]:
    """The deploy.build command for one model, and the trtexec equivalents as comments."""
    from .trt.build import planned_trtexec

    model = os.path.basename(path)
    engine = model[:-5] + ".engine"
    command = ["python3", "-m", "deploy.build", model, "-o", engine]
    if options.max_batch is not None:
        command += ["--max-batch", str(options.max_batch)]
    if options.calib_cache:
        command += ["--calib-cache", options.calib_cache]
    lines = [" ".join(shlex.quote(part) for part in command)]
    for target, version in TARGETS:
        try:
            line = planned_trtexec(path, engine, version, options, JETSON_TRTEXEC)
            lines.append("# equivalent on {}: {}".format(target, line))
        except UserError as exc:
            lines.append("# {}: not buildable with trtexec ({})".format(target, exc))
    return lines


def _script(blocks: List[List[str]]) -> str:
    body = ["#!/bin/sh", "# Build the TensorRT engines on the device that will run them: an engine only loads on the",
            "# TensorRT version and GPU that built it. Each model's sidecar JSON records both.", "set -e",
            'cd "$(dirname "$0")"', ""]
    for block in blocks:
        body += block + [""]
    return "\n".join(body)


def _readme(models: List[str], caches: List[str], labels: List[str], commands: List[str], samples: str,
            has_reference: bool) -> str:
    model = os.path.basename(models[0])
    engine = model[:-5] + ".engine"
    labels_flag = " --labels {}".format(os.path.basename(labels[0])) if labels else ""
    lines = [
        "# eca-deploy bundle", "",
        "Contents:", "",
        "- models: {}".format(", ".join(os.path.basename(m) for m in models)),
        "  (each with `<model>.onnx.json`: preprocessing metadata, input shapes, precision, sha256)",
    ]
    if caches:
        lines.append("- calibration caches (legacy implicit INT8, TensorRT 8.x-10.x): {}".format(
            ", ".join(os.path.basename(c) for c in caches)))
    if labels:
        lines.append("- labels: {}".format(", ".join(os.path.basename(l) for l in labels)))
    lines += [
        "- `deploy/`: the runtime. It needs Python 3.8+, numpy and Pillow; on a Jetson, TensorRT and its CUDA",
        "  runtime come with JetPack (do not pip install tensorrt; `sudo apt install python3-libnvinfer` if it is",
        "  missing, and create virtualenvs with `--system-site-packages`). cuda-python or pycuda are used when",
        "  present, else libcudart.so through ctypes. OpenCV is needed only for --video/--camera/--gst.",
        "", "## 1. Build the engines on the target", "",
        "Engines are tied to the TensorRT version and GPU that build them, so they are built here:", "",
        "    sh build_engines.sh", "", "which runs:", "",
    ] + ["    " + command for command in commands] + [
        "", "The script's comments hold the equivalent trtexec lines for JetPack 6 and JetPack 5.", "",
    ] + _check_section(has_reference) + [
        "## 3. Run", "",
        "    python3 -m deploy.infer {} {}{}".format(engine, samples, labels_flag),
        "    python3 -m deploy.infer {} --gst \"nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! "
        "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink\" --max-frames 300".format(engine),
        "", "Without TensorRT (a laptop with onnxruntime), the ONNX model runs the same way:", "",
        "    python3 -m deploy.infer {} {}{}".format(model, samples, labels_flag),
        "", "Add `--json` for one JSON line per image and a final summary line with latency statistics.",
        "On a folder of class folders (like `{}/`) both outputs also give top-1 and top-5 accuracy.".format(samples)
        if samples == SAMPLES_FOLDER else "", "",
    ]
    return "\n".join(lines)


def _check_section(has_reference: bool) -> List[str]:
    """The README step right after the build: every model and engine against PyTorch, on this device."""
    if not has_reference:
        return ["## 2. Check", "", "This bundle was made with --no-reference, so it carries no PyTorch logits and",
                "`python3 -m deploy.check` has nothing to hold the engines to.", ""]
    return [
        "## 2. Check the engines against PyTorch", "",
        "    python3 -m deploy.check          # or: python3 -m deploy.check . --json", "",
        "`{}` holds preprocessed images, the logits the PyTorch original gave for them and, per".format(
            REFERENCE_FILE),
        "precision, the least top-1 agreement and logit cosine the models passed with on the CPU before bundling.",
        "deploy.check runs every `.engine` (TensorRT) and `.onnx` model (ONNX Runtime, when installed) here on",
        "those images, prints top-1/top-5 agreement, max abs error, cosine, latency p50/p99 and PASS or FAIL per",
        "artifact, and exits 1 when any fails. An engine that fails is not the model you bundled: do not deploy it.",
        "",
    ]


def _fill(staging: str, models, caches, labels, max_batch, notes, proof=None) -> List[str]:
    photos = _ships_photos(models)
    shutil.copytree(DEPLOY_DIR, os.path.join(staging, "deploy"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", *(() if photos else ("samples",))))
    commands, blocks = [], []
    for path in models:
        name = os.path.basename(path)
        shutil.copy2(path, os.path.join(staging, name))
        if os.path.exists(path + ".data"):  # weights saved as external data travel with the model
            shutil.copy2(path + ".data", os.path.join(staging, name + ".data"))
        sidecar = model_sidecar(path)
        write_json(os.path.join(staging, name + ".json"), sidecar)
        lines = build_lines(path, sidecar, _build_options(path, sidecar, caches, max_batch, notes))
        commands.append(lines[0])
        blocks.append(lines)
    for path in caches + labels:
        shutil.copy2(path, os.path.join(staging, os.path.basename(path)))
    if len(caches) > 1:
        notes.append("several calibration caches: build_engines.sh passes none; add --calib-cache by hand")
    notes.extend(_cache_version_note(path) for path in caches)
    write_text(os.path.join(staging, "build_engines.sh"), _script(blocks))
    os.chmod(os.path.join(staging, "build_engines.sh"), 0o755)
    samples, labels = _write_proof(staging, proof, labels, photos)
    write_text(os.path.join(staging, "README.md"), _readme(models, caches, labels, commands, samples,
                                                           proof is not None))
    return commands


def _ships_photos(models: Sequence[str]) -> bool:
    """The ImageNet sample photos fit only 1000-class ImageNet models; a digits model would call a cat a 3."""
    from .metadata import read_model_info
    return all(read_model_info(path).num_classes == IMAGENET_CLASSES for path in models)


def _write_proof(staging: str, proof, labels: List[str], photos: bool) -> Tuple[str, List[str]]:
    """reference.npz, the held-out sample images (class folders) and their class names; returns the samples
    folder the README runs on and the label files the bundle now has."""
    from .reference import save_reference

    samples = "deploy/samples" if photos else "YOUR_IMAGES/"
    if proof is None:
        return samples, labels
    save_reference(os.path.join(staging, REFERENCE_FILE), proof.data)
    for index, (path, folder) in enumerate(proof.samples):
        target = os.path.join(staging, SAMPLES_FOLDER, *([folder] if folder else []))
        os.makedirs(target, exist_ok=True)
        shutil.copy2(path, os.path.join(target, "{:02d}_{}".format(index, os.path.basename(path))))
    if proof.samples:
        samples = SAMPLES_FOLDER
    names = proof.class_names
    if names and not labels and len(names) == len(proof.data.logits[0]) and not photos:
        write_text(os.path.join(staging, CLASS_NAMES_FILE), "\n".join(names) + "\n")
        labels = labels + [os.path.join(staging, CLASS_NAMES_FILE)]
    return samples, labels


def _cache_version_note(path: str) -> str:
    """TensorRT ignores, and deploy.build refuses, a cache stamped for another version: say which it is for."""
    from .calib_cache import format_trt_version, read_calibration_cache
    stamped = format_trt_version(read_calibration_cache(path).trt_version)
    return ("{} is stamped for TensorRT {}; the target's TensorRT must match ({}), else recalibrate with "
            "`cli.py calibrate --trt-version <version>`".format(
                os.path.basename(path), stamped, "; ".join("{}: {}".format(t, v) for t, v in TARGETS)))


def _list_files(root: str) -> List[str]:
    found = []
    for directory, _, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, name), root) for name in files]
    return sorted(found)


def bundle(artifacts: Sequence[str], output, max_batch: Optional[int] = None, force: bool = False,
           proof=None) -> BundleResult:
    """Write the bundle to ``output`` (a folder, or a tarball when it ends in .tar.gz/.tgz).

    ``proof`` (benchmark.reference.BundleReference, made where PyTorch runs) adds reference.npz for
    ``python -m deploy.check`` and the held-out sample images; without it the bundle carries no proof.
    """
    models, caches, labels = classify_artifacts(artifacts)
    if max_batch is not None and max_batch < 1:
        raise UserError("--max-batch must be at least 1, got {}".format(max_batch))
    output = os.path.abspath(os.fspath(output))
    is_tar = output.lower().endswith(TAR_SUFFIXES)
    if not is_tar and os.path.exists(output) and not force:
        raise UserError("{} exists; choose another output or pass --force to replace it".format(output))
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    root_name = os.path.basename(output)
    for suffix in TAR_SUFFIXES:
        if root_name.lower().endswith(suffix):
            root_name = root_name[:-len(suffix)]
    notes: List[str] = []
    staging = tempfile.mkdtemp(prefix="." + root_name + ".", suffix=".part", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the bundle is meant to be copied and shared
    try:
        commands = _fill(staging, models, caches, labels, max_batch, notes, proof)
        files = _list_files(staging)
        if is_tar:
            with atomic_path(output) as tmp:
                with tarfile.open(tmp, "w:gz") as tar:
                    tar.add(staging, arcname=root_name)
        else:
            if os.path.isdir(output):
                aside = staging + ".old"
                os.replace(output, aside)
                shutil.rmtree(aside, ignore_errors=True)
            elif os.path.exists(output):
                os.remove(output)
            os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    samples = next((p for p in (SAMPLES_FOLDER, "deploy/samples") if any(f.startswith(p + "/") for f in files)), None)
    return BundleResult(output, "tar.gz" if is_tar else "folder", [os.path.basename(m) for m in models],
                        [os.path.basename(c) for c in caches], [os.path.basename(l) for l in labels], files, commands,
                        notes, REFERENCE_FILE if REFERENCE_FILE in files else None, samples)
