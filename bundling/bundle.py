"""Pack what a target device needs into one folder or tarball: ``eca-deploy bundle ARTIFACTS... -o DIR_OR_TAR``.

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

import deploy
from deploy.errors import UserError, os_error
from deploy.fileio import atomic_path, remove_stale_temps, sha256_file, temp_prefix, write_json, write_text
from deploy.manifest import CLASS_NAMES_FILE, MANIFEST, REFERENCE_FILE, read_manifest
from deploy.names import check_label_names, check_name, numbered_name, write_label_file
from deploy.reference import PREPROCESS_TOLERANCE_LEVELS, PROBE_FOLDER, bundle_path_ok
# DEFAULT_MAX_BATCH: the largest batch benchmark-engine, pipeline and deploy.bench time by default, so an engine
# built from the bundle runs every batch it was measured at
from deploy.runners.execution import DEFAULT_MAX_BATCH, ENGINE_SUFFIXES, ONNX_SUFFIXES
from deploy.validate import MAX_BATCH, check_bound, check_outputs_spare_inputs

from .formats import shell_command, shell_comment, shell_word

# The runtime the device gets: the deploy/ package as it is, without this host-side room.
DEPLOY_DIR = os.path.dirname(os.path.abspath(deploy.__file__))
MODEL_SUFFIXES = ONNX_SUFFIXES
CACHE_SUFFIXES = (".cache", ".calib")
LABEL_SUFFIXES = (".txt", ".labels", ".names")
TAR_SUFFIXES = (".tar.gz", ".tgz")
# What Jetsons run: the trtexec lines are written for these TensorRT versions.
TARGETS = (("JetPack 6, TensorRT 10.3", "10.3.0"), ("JetPack 5, TensorRT 8.5", "8.5.2"))
JETSON_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"
IMAGENET_CLASSES = 1000   # only such models get deploy/samples, the ImageNet photos
SAMPLES_FOLDER = "samples"


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
        check_name(name, "file name", path)  # it is written into build_engines.sh, the README and the configs
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


def model_data_files(path: str) -> List[str]:
    """The external-data files of a model, relative to its folder; UserError for a model the target could not
    load: unreadable, opset out of range, data outside its folder or missing, or no eca-deploy metadata."""
    from deploy.metadata import load_onnx_proto, read_model_info
    from deploy.validate import external_data_files
    read_model_info(path)  # metadata present, valid and matching the graph
    _, model = load_onnx_proto(path)
    if model is None:
        raise UserError("bundling needs the onnx package to read {}".format(path))
    return external_data_files(model, path)


def check_tensor_names(path: str) -> None:
    """The model's input and output names reach build_engines.sh (trtexec --shapes), nvinfer's
    output-blob-names, Triton's config and the README: a name with a control character is refused now, before
    any slow work, naming the model and the name (escaped)."""
    from deploy.metadata import load_onnx_proto
    _, model = load_onnx_proto(path)
    if model is None:
        return  # model_data_files says that bundling needs onnx
    initializers = {init.name for init in model.graph.initializer}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            if value.name not in initializers:
                check_name(value.name, "{} tensor".format(kind), path)


def check_class_folders(data_dir) -> None:
    """Class folders of an ImageFolder --data become labels lines and folder names the device reads: each must be
    one labels line (deploy.names.label_problem), checked before any slow work."""
    if data_dir is None or not os.path.isdir(os.fspath(data_dir)):
        return
    try:
        entries = sorted(os.scandir(os.fspath(data_dir)), key=lambda entry: entry.name)
        classes = [entry.name for entry in entries if not entry.name.startswith(".") and entry.is_dir()]
    except OSError:
        return  # the data layer says what is wrong with the folder
    check_label_names(classes, "class folders of --data {}".format(os.fspath(data_dir)))


def _carry(source: str, relative: str, staging: str, carried: Dict[str, str]) -> None:
    """Copy one external-data file into the bundle, refusing two different files under one name."""
    real = os.path.realpath(source)
    if relative in carried:
        if carried[relative] != real:
            raise UserError("{} and {} would both be {} in the bundle; a bundle is one flat folder".format(
                carried[relative], real, relative))
        return
    if os.path.exists(os.path.join(staging, relative)):
        raise UserError("external data file {} clashes with another file of the bundle".format(relative))
    carried[relative] = real
    os.makedirs(os.path.dirname(os.path.join(staging, relative)), exist_ok=True)
    shutil.copy2(source, os.path.join(staging, relative))


def check_models_load(staging: str, models: Sequence[str]) -> None:
    """Each model loads from the staging folder with all its weights, as it will on the target."""
    import onnx
    for path in models:
        staged = os.path.join(staging, os.path.basename(path))
        model_data_files(staged)
        try:
            onnx.load(staged)
        except Exception as exc:  # noqa: BLE001  (onnx raises several types for a missing or short data file)
            raise UserError("{} does not load from the bundle: {}".format(
                os.path.basename(path), str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)) from None


def model_sidecar(path: str) -> Dict[str, object]:
    """What the target needs to know without the onnx package: metadata, input shapes, precision, sha256."""
    from deploy.metadata import read_onnx_metadata
    from deploy.onnx_info import inspect_onnx

    info = inspect_onnx(path)
    return {"metadata": read_onnx_metadata(path),
            "inputs": {name: list(shape) for name, shape in info.inputs.items()},
            "precision": info.precision.to_dict(), "sha256": sha256_file(path)}


def _build_options(path: str, sidecar: Dict[str, object], caches: List[str], max_batch: Optional[int], notes):
    """Each model builds in its own precision; implicit INT8 from a bundled cache is offered, never implied."""
    from deploy.trt.build import BuildOptions
    from deploy.trt.profiles import is_dynamic

    dynamic = any(shape and is_dynamic(shape[0]) for shape in sidecar["inputs"].values())
    if max_batch is not None and not dynamic:
        notes.append("{} has a static batch; --max-batch is not used for it".format(os.path.basename(path)))
    return BuildOptions(max_batch=(max_batch or DEFAULT_MAX_BATCH) if dynamic else None)


def build_lines(path: str, sidecar: Dict[str, object], options, caches: Sequence[str] = ()) -> List[str]:
    """The deploy.build command for one model, then per target TensorRT its plan, trtexec and polygraphy lines
    as comments: all from ``deploy.trt.plan.plan_build``, the plan ``deploy.build --dry-run`` prints. A model no
    target TensorRT would accept (a CPU-target INT8 model) gets no command: the first line is then a comment
    saying why, and the model stays an ONNX Runtime model."""
    from deploy.trt.plan import plan_build, polygraphy_command, trtexec_command

    model, planned, comments, refusals = os.path.basename(path), [], [], []
    for target, version in TARGETS:
        try:
            plan = plan_build(path, None, version, options)
        except UserError as exc:
            comments.append(shell_comment("{}: cannot build ({})".format(target, exc)))
            refusals.append(str(exc))
            continue
        planned.append(plan)
        comments += [shell_comment("{}: {} [{}]".format(target, plan.precision, " ".join(plan.trt_flags) or
                                                          "no flags"))]
        comments += [shell_comment("  float layers: " + plan.float_layers)] if plan.float_layers else []
        comments += [shell_comment("  " + trtexec_command(plan, JETSON_TRTEXEC, relative=True)),
                     shell_comment("  " + polygraphy_command(plan, relative=True))]
    if not planned:
        reason = refusals[0][len(model) + 2:] if refusals[0].startswith(model + ": ") else refusals[0]
        return [shell_comment("{}: no TensorRT engine, it runs with ONNX Runtime (python3 -m deploy.infer {}): {}"
                              .format(model, shell_word(model), reason))]
    command = ["python3", "-m", "deploy.build", model]
    if planned:
        command += ["-o", os.path.basename(planned[0].engine)]
    if options.max_batch is not None:
        command += ["--max-batch", str(options.max_batch)]
    lines = [shell_command(command)] + comments
    if caches and not sidecar["precision"]["qdq"] and not sidecar["precision"]["fp16"]:
        lines.append(shell_comment("legacy implicit INT8 (TensorRT 8.5-10.x, the cache's version must match), on "
                                   "request only:"))
        lines += [shell_comment("  python3 -m deploy.build {} --implicit-int8 --calib-cache {}".format(
            shell_word(model), shell_word(os.path.basename(cache)))) for cache in caches]
    return lines


def _script(blocks: List[List[str]]) -> str:
    body = ["#!/bin/sh", "# Build the TensorRT engines on the device that will run them: an engine only loads on the",
            "# TensorRT version and GPU that built it. Each model's sidecar JSON records both.", "set -e",
            'cd "$(dirname "$0")"', ""]
    for block in blocks:
        body += block + [""]
    return "\n".join(body)


def _readme(models: List[str], caches: List[str], labels: List[str], commands: List[str], samples: str,
            proof) -> str:
    model = os.path.basename(models[0])
    # the engine name (it carries the precision) as build_engines.sh writes it; none when no model builds
    first = shlex.split(commands[0]) if commands else []
    engine = first[first.index("-o") + 1] if "-o" in first else model[:-5] + ".engine"
    labels_flag = " --labels {}".format(shell_word(os.path.basename(labels[0]))) if labels else ""
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
        "  missing, and create virtualenvs with `--system-site-packages`). Building and running engines also needs",
        "  Polygraphy (`pip install polygraphy==0.53.6`, pure Python). OpenCV is needed only for --video/--camera/--gst.",
        "", "## 1. Build the engines on the target", "",
        "Engines are tied to the TensorRT version and GPU that build them, so they are built here:", "",
        "    sh build_engines.sh", "", "which runs:", "",
    ] + ["    " + command for command in commands] + [
        "", "The script's comments hold the plan and the equivalent trtexec and polygraphy lines for JetPack 6 and",
        "JetPack 5 (`python3 -m deploy.build MODEL.onnx --dry-run` prints the same plan).", "",
    ] + _check_section(proof, _origin(models)) + [
        "## 3. Run", "",
        "    python3 -m deploy.infer {} {}{}".format(shell_word(engine), samples, labels_flag),
        "    python3 -m deploy.infer {} --gst \"nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! "
        "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink\" --max-frames 300".format(
            shell_word(engine)),
        "", "Without TensorRT (a laptop with onnxruntime), the ONNX model runs the same way:", "",
        "    python3 -m deploy.infer {} {}{}".format(shell_word(model), samples, labels_flag),
        "", "Add `--json` for one JSON line per image and a final summary line with latency statistics.",
        "On a folder of class folders (like `{}/`) both outputs also give top-1 and top-5 accuracy.".format(samples)
        if samples == SAMPLES_FOLDER else "", "",
        "Timing: `python3 -m deploy.bench --batch-sizes 1,8` (trtexec's figures; deploy.check stays the gate).", "",
    ]
    return "\n".join(lines)


def _origin(models: Sequence[str]) -> str:
    """Where the reference logits come from: PyTorch, or the FP32 ONNX of a model from elsewhere."""
    from deploy.metadata import read_model_info, reference_origin
    return reference_origin(read_model_info(models[0]).source_kind)


def _check_section(proof, origin: str = "PyTorch") -> List[str]:
    """The README step right after the build: every model and engine against the reference, on this device."""
    if proof is None:
        return ["## 2. Check", "", "This bundle was made with --no-reference, so it carries no reference logits and",
                "`python3 -m deploy.check` has nothing to hold the engines to.", ""]
    return [
        "## 2. Check the engines against {}".format(origin), "",
        "    python3 -m deploy.check          # or: python3 -m deploy.check . --json", "",
        "`{}` holds {} reference images (uint8 crops), the logits {} gave for them and,".format(
            REFERENCE_FILE, proof.data.num_images, origin),
        "per model, the top-1 agreement and logit cosine it measured on the CPU before bundling. Each engine must",
        "reach the measured figures of the model it was built from, less an allowance of whole images for another",
        "backend's kernels: twice the one flip in 400 images that the order of operations alone caused in the",
        "kernel-order study, or the images it changed for this model on the CPU, whichever is more. Only near",
        "ties may change class: an image the model decided on the CPU by more than twice its kernel noise (the",
        "largest logit change the order of operations caused there) must keep its class. Its logit error",
        "(1 - cosine) may at most double. NaN outputs, or a model the proof or manifest names but this folder",
        "lacks, fail too.",
        "",
        "A PASS means these bytes: the check first compares the sha256 of every model, its data and sidecar, each",
        "calibration cache, labels file (the DeepStream, Triton and jetson-inference copies too) and probe image",
        "with the one recorded when the bundle was made (in `{}` and the manifest). A renamed, re-saved,".format(
            REFERENCE_FILE),
        "swapped or edited file fails, naming both digests; an engine must name a bundled model as its source.",
        "Not bound: `deploy/`, `samples/`, this README and `build_engines.sh`. An edited bar (below the floors,",
        "or not what the measured figures give) is refused.",
        "",
        "First, this device's Pillow and numpy preprocess the probe images in `{}/`".format(PROBE_FOLDER),
        "and must match what the project made of them within {:g} pixel level; that needs no runtime".format(
            PREPROCESS_TOLERANCE_LEVELS),
        "(`python3 -m deploy.check --preprocessing-only`).",
        "",
        "Measured on the CPU (the bar the device is held to):", "",
    ] + ["    {name}: top-1 agreement {measured_top1_agreement:.2f}% (allowed {required_top1_agreement:.2f}%: "
         "{allowance_images} image(s) for the kernels), cosine {measured_cosine:.5f} (allowed {required_cosine:.5f})"
         .format(**bar.to_dict()) + "; {} near-tie image(s) may change class".format(_near_ties(bar, proof.data))
         for bar in proof.data.bars] + [
        "",
        "deploy.check runs every `.engine` (TensorRT) and `.onnx` model (ONNX Runtime, when installed) here on",
        "those images, prints measured, allowed and reached per artifact, and exits 1 when any fails. An engine",
        "that fails is not the model you bundled: do not deploy it.",
        "",
    ]


def _near_ties(bar, data) -> int:
    near = bar.near_ties(data.logits)
    return 0 if near is None else int(near.sum())


def _fill(staging: str, models, caches, labels, max_batch, notes, proof=None) -> List[str]:
    photos = _ships_photos(models)
    shutil.copytree(DEPLOY_DIR, os.path.join(staging, "deploy"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", *(() if photos else ("samples",))))
    commands, blocks = [], []
    carried: Dict[str, str] = {}
    for path in models:
        name = os.path.basename(path)
        shutil.copy2(path, os.path.join(staging, name))
        for relative in model_data_files(path):  # external weights travel with the model, whatever their name
            _carry(os.path.join(os.path.dirname(path), relative), relative, staging, carried)
        sidecar = model_sidecar(path)
        write_json(os.path.join(staging, name + ".json"), sidecar)
        lines = build_lines(path, sidecar, _build_options(path, sidecar, caches, max_batch, notes), caches)
        if lines[0].startswith("#"):  # no TensorRT would accept it: bundled for ONNX Runtime, no build line
            notes.append(lines[0][2:])
        else:
            commands.append(lines[0])
        blocks.append(lines)
    check_models_load(staging, models)  # before anything (jetson-inference's copy) reads the staged models
    for path in caches + labels:
        shutil.copy2(path, os.path.join(staging, os.path.basename(path)))
    notes.extend(_cache_version_note(path) for path in caches)
    samples, labels = _write_proof(staging, proof, labels, photos)
    from .ecosystem import write_ecosystem
    ecosystem = write_ecosystem(staging, commands, labels,  # deepstream/, triton/, jetson-inference/
                                proof.data.nvinfer if proof is not None else None)
    write_text(os.path.join(staging, "build_engines.sh"), _script(blocks + ecosystem.script_blocks))
    os.chmod(os.path.join(staging, "build_engines.sh"), 0o755)
    write_text(os.path.join(staging, "README.md"), _readme(models, caches, labels, commands, samples, proof)
               + ecosystem.readme_text())
    files = bound_files(staging)
    if proof is not None:
        _seal_proof(staging, proof, files)
    write_json(os.path.join(staging, MANIFEST), {"producer": "eca-deploy", "models": [
        os.path.basename(m) for m in models], "data_files": sorted(carried), "files": files})
    return commands


# What deploy.check does not hold to its bytes: the runtime that does the checking, the sample images, the README
# and build script (instructions a user reads and may adapt), and the manifest and proof that hold the sha256s.
UNBOUND_FOLDERS = ("deploy", SAMPLES_FOLDER)
UNBOUND_FILES = ("README.md", "build_engines.sh", MANIFEST, REFERENCE_FILE)


def bound_files(staging: str) -> Dict[str, str]:
    """Path inside the bundle ('/'-separated) -> sha256 of every file deploy.check binds: the models with their
    external data and sidecars, calibration caches, label files, the probe images, and the DeepStream, Triton and
    jetson-inference files (their label copies and model copies included)."""
    files = {}
    for relative in _list_files(staging):
        name = "/".join(relative.split(os.sep))
        if ("/" in name and name.split("/", 1)[0] in UNBOUND_FOLDERS) or name in UNBOUND_FILES:
            continue
        if not bundle_path_ok(name):
            raise UserError("cannot bundle a file named {!r}: the proof records every file by a name without "
                            "control characters or backslashes; rename it".format(name))
        files[name] = sha256_file(os.path.join(staging, relative))
    return files


def _seal_proof(staging: str, proof, files: Dict[str, str]) -> None:
    """reference.npz, written last so it records every bound file: deleting or editing the manifest then frees
    nothing, since the proof alone names each model and file and its sha256."""
    from .proof import save_reference

    changed = [bar.name for bar in proof.data.bars if files.get(bar.name) != bar.sha256]
    if changed:
        raise UserError("{} changed while the bundle was made (its sha256 is not the one its bar was measured "
                        "on); bundle again".format(", ".join(changed)))
    proof.data.files = dict(files)
    save_reference(os.path.join(staging, REFERENCE_FILE), proof.data)


def _ships_photos(models: Sequence[str]) -> bool:
    """The ImageNet sample photos fit only 1000-class ImageNet models; a digits model would call a cat a 3."""
    from deploy.metadata import read_model_info
    return all(read_model_info(path).num_classes == IMAGENET_CLASSES for path in models)


def _write_proof(staging: str, proof, labels: List[str], photos: bool) -> Tuple[str, List[str]]:
    """The probe images, the held-out sample images (class folders) and their class names (reference.npz is
    written last, _seal_proof); returns the samples folder the README runs on and the label files the bundle
    now has."""
    samples = "deploy/samples" if photos else "YOUR_IMAGES/"
    if proof is None:
        return samples, labels
    for name, source in zip(proof.data.probe_files, proof.probe_sources):
        os.makedirs(os.path.dirname(os.path.join(staging, name)), exist_ok=True)
        shutil.copy2(source, os.path.join(staging, name))
    for name, payload in getattr(proof, "probe_payloads", {}).items():  # the JPEG probes encoded for the device
        os.makedirs(os.path.dirname(os.path.join(staging, name)), exist_ok=True)
        with open(os.path.join(staging, name), "wb") as handle:
            handle.write(payload)
    for index, (path, folder) in enumerate(proof.samples):
        target = os.path.join(staging, SAMPLES_FOLDER, *([folder] if folder else []))
        os.makedirs(target, exist_ok=True)
        shutil.copy2(path, os.path.join(target, numbered_name(index, os.path.basename(path))))
    if proof.samples:
        samples = SAMPLES_FOLDER
    names = proof.class_names
    if names and not labels and len(names) == len(proof.data.logits[0]) and not photos:
        write_label_file(os.path.join(staging, CLASS_NAMES_FILE), names, "class folders of the reference --data")
        labels = labels + [os.path.join(staging, CLASS_NAMES_FILE)]
    return samples, labels


def _cache_version_note(path: str) -> str:
    """TensorRT ignores, and deploy.build refuses, a cache stamped for another version: say which it is for."""
    from deploy.calib_cache import format_trt_version, read_calibration_cache
    stamped = format_trt_version(read_calibration_cache(path).trt_version)
    return ("{} is stamped for TensorRT {}; the target's TensorRT must match ({}), else recalibrate with "
            "`eca-deploy calibrate --trt-version <version>`".format(
                os.path.basename(path), stamped, "; ".join("{}: {}".format(t, v) for t, v in TARGETS)))


def _list_files(root: str) -> List[str]:
    found = []
    for directory, _, files in os.walk(root):
        found += [os.path.relpath(os.path.join(directory, name), root) for name in files]
    return sorted(found)


def _identity(path: str) -> Optional[Tuple[int, int, int]]:
    """(device, inode, modification time) of what is at ``path`` now, links not followed; None when nothing is.
    The time tells a folder deleted and made again (which may get the freed inode back) from the one checked."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino, status.st_mtime_ns


def _check_unchanged(output: str, found: Optional[Tuple[int, int, int]]) -> None:
    """The output is still what the checks saw (nothing, or that previous bundle): something that appeared or
    was put there while the bundle was written is never replaced, let alone deleted."""
    if _identity(output) != found:
        raise UserError("{} {} while the bundle was being written; it was left as it is, choose another output or "
                        "rerun".format(output, "appeared" if found is None else "was replaced by something else"))


def _replace_folder(staging: str, output: str, found: Optional[Tuple[int, int, int]]) -> None:
    """Move the finished folder into place. A previous bundle is renamed aside, checked to be the very folder
    (same inode, still with its manifest) that check_output allowed, and only then deleted; anything else is put
    back and refused."""
    _check_unchanged(output, found)
    if found is None:
        os.rename(staging, output)  # a non-empty folder that appeared since the line above makes this fail
        return
    aside = staging + ".old"
    os.rename(output, aside)
    moved = _identity(aside)  # a rename may touch the time on some file systems, never the inode
    if moved is None or moved[:2] != found[:2] or not _still_a_bundle(aside):
        os.rename(aside, output)
        raise UserError("{} was replaced by something else while the bundle was being written; it was left as it "
                        "is".format(output))
    try:
        os.rename(staging, output)
    except OSError:
        os.rename(aside, output)  # the previous bundle stays whole
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _still_a_bundle(folder: str) -> bool:
    try:
        return read_manifest(folder) is not None
    except UserError:  # damaged since the check: not something to delete
        return False


def _is_previous_bundle(output: str, is_tar: bool) -> bool:
    if is_tar:
        try:
            with tarfile.open(output, "r:gz") as tar:
                return any(name.split("/", 1)[-1] == MANIFEST for name in tar.getnames()[:5000])
        except (OSError, tarfile.TarError, EOFError):
            return False
    return read_manifest(output) is not None  # a damaged one says which field


def check_replaceable(output: str, is_tar: bool, inputs: Sequence[str], force: bool) -> None:
    """An existing output may be replaced only with --force and only when it is a previous bundle: never the
    current or home folder or anything that lacks the bundle manifest (check_output has refused one that holds
    an input)."""
    if not os.path.lexists(output):
        return
    if not force:
        raise UserError("{} exists; choose another output or pass --force to replace it".format(output))
    real = os.path.realpath(output)
    protected = {os.path.realpath(os.getcwd()): "the current folder", os.path.realpath(os.path.expanduser("~")):
                 "your home folder", os.path.realpath(os.sep): "the root folder"}
    for folder, what in protected.items():
        if folder == real or folder.startswith(real.rstrip(os.sep) + os.sep):
            raise UserError("refusing to replace {}: it is or holds {}".format(output, what))
    if not _is_previous_bundle(output, is_tar):
        raise UserError("refusing to replace {}: --force replaces only a previous bundle (one with {}), and this "
                        "is not one".format(output, MANIFEST))


def check_output(artifacts: Sequence[str], output, force: bool, inputs=()) -> Tuple[str, bool]:
    """(absolute output, is it a tarball), once it is known that writing there replaces nothing it must not;
    callers run this before any slow work (the PyTorch reference), so a refused -o costs nothing. ``inputs``:
    (option, path) of what else the bundle reads (--weights, --data, --labels), which it may not replace either."""
    models, caches, labels = classify_artifacts(artifacts)
    output = os.path.abspath(os.path.expanduser(os.fspath(output)))
    is_tar = output.lower().endswith(TAR_SUFFIXES)
    check_outputs_spare_inputs(inputs=[("ARTIFACTS", list(models) + list(caches) + list(labels))] + list(inputs),
                               replaced=[("-o", output)])
    check_replaceable(output, is_tar, list(models) + list(caches) + list(labels), force)
    for model in models:
        check_tensor_names(model)
    return output, is_tar


def bundle(artifacts: Sequence[str], output, max_batch: Optional[int] = None, force: bool = False,
           proof=None) -> BundleResult:
    """Write the bundle to ``output`` (a folder, or a tarball when it ends in .tar.gz/.tgz).

    ``proof`` (benchmark.bundle_reference.BundleReference, made where PyTorch runs) adds reference.npz for
    ``python -m deploy.check`` and the held-out sample images; without it the bundle carries no proof.
    """
    models, caches, labels = classify_artifacts(artifacts)
    check_bound("--max-batch", max_batch, MAX_BATCH)
    output, is_tar = check_output(artifacts, output, force)
    found = _identity(output)  # what check_output allowed to be replaced: only this may be, at the end
    if proof is not None and proof.class_names:
        check_label_names(proof.class_names, "class folders of the reference --data")
    parent = os.path.dirname(output)
    root_name = os.path.basename(output)
    for suffix in TAR_SUFFIXES:
        if root_name.lower().endswith(suffix):
            root_name = root_name[:-len(suffix)]
    notes: List[str] = []
    try:
        os.makedirs(parent, exist_ok=True)
        remove_stale_temps(os.path.join(parent, root_name))
        staging = tempfile.mkdtemp(prefix=temp_prefix(os.path.join(parent, root_name)), suffix=".part",
                                   dir=parent)
    except OSError as exc:
        raise os_error(exc, output) from None
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the bundle is meant to be copied and shared
        commands = _fill(staging, models, caches, labels, max_batch, notes, proof)
        files = _list_files(staging)
        if is_tar:
            with atomic_path(output) as tmp:
                with tarfile.open(tmp, "w:gz") as tar:
                    tar.add(staging, arcname=root_name)
                _check_unchanged(output, found)
        else:
            _replace_folder(staging, output, found)
    except OSError as exc:  # a full disk, a read-only folder, an unreadable input: say which path and why
        raise os_error(exc, output) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    samples = next((p for p in (SAMPLES_FOLDER, "deploy/samples") if any(f.startswith(p + "/") for f in files)), None)
    return BundleResult(output, "tar.gz" if is_tar else "folder", [os.path.basename(m) for m in models],
                        [os.path.basename(c) for c in caches], [os.path.basename(l) for l in labels], files, commands,
                        notes, REFERENCE_FILE if REFERENCE_FILE in files else None, samples)
