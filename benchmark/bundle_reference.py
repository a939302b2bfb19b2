"""The proof a bundle carries, made where PyTorch and the checkpoint are: images, PyTorch logits, measured bars.

The reference model is rebuilt as benchmark-engine builds it (the zoo architecture named in the ONNX metadata,
loaded with the checkpoint the models were exported from, at their input size), and the inputs are real
images through the models' own preprocessing. Every ONNX model of the bundle then runs on this CPU with
deploy.check, the same code the device runs; what each measured (top-1 agreement, logit cosine) becomes the bar
the device must reach (deploy.reference.bar_from_measured). A model already below the user's --min-agreement
floor here stops the bundle. A few source images travel with the tensors made from them, so the device's own
preprocessing is checked too.
"""
import os
import re
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.check import ArtifactCheck, measure_artifact
from deploy.errors import CheckFailedError, UserError
from deploy.metadata import ModelInfo, read_model_info
from deploy.names import numbered_name
from deploy.preprocess import network_input
from deploy.fileio import sha256_file
from deploy.reference import (DEFAULT_REFERENCE_IMAGES, PROBE_FOLDER, ReferenceData, bar_from_measured, floor_bar,
                              pick_probes)

from .parity_and_speed import (Artifact, Reference, check_artifact as check_against_reference, chosen_digests,
                               load_images, original_reference)

IMAGENET_CLASSES = 1000
SAMPLE_IMAGES = 20   # held-out images shipped from --data, for the README's deploy.infer example
TORCH_BATCH = 32


@dataclass
class BundleReference:
    """The reference data, the images to ship as samples (path, class folder or None) and the CPU checks."""

    data: ReferenceData
    samples: List[Tuple[str, Optional[str]]]
    class_names: Optional[List[str]]
    cpu_checks: List[ArtifactCheck]
    notes: List[str] = field(default_factory=list)
    probe_sources: List[str] = field(default_factory=list)  # the source files of data.probe_files
    probe_payloads: Dict[str, bytes] = field(default_factory=dict)  # probe files made here (JPEG), by name


def common_model_info(models: Sequence[str]) -> ModelInfo:
    """The ModelInfo the bundled models share; one reference serves them only when they come from one export."""
    infos = [(path, read_model_info(path)) for path in models]
    first_path, first = infos[0]
    for path, info in infos[1:]:
        for what in ("arch", "num_classes", "checkpoint_sha256", "preprocess"):
            if getattr(info, what) != getattr(first, what):
                raise UserError("{} and {} differ in {} ({} vs {}): one bundle's reference data serves models "
                                "exported from one checkpoint; bundle them separately or pass --no-reference"
                                .format(os.path.basename(first_path), os.path.basename(path), what,
                                        getattr(first, what), getattr(info, what)))
    return first


def reference_model(info: ModelInfo, weights, candidates: Sequence[str] = ()) -> Reference:
    """The PyTorch original of ``info``: its arch with ``weights`` (or the recorded random seed), the program the
    models were exported from, or, for an ONNX model from elsewhere, its FP32 ONNX."""
    import models
    from models.info import num_classes_of, preprocess_for

    original = original_reference(info, weights, candidates)
    if original is not None:
        return original
    if info.checkpoint_sha256 and weights is None:
        raise UserError("the models were exported from checkpoint {}...; give it with --weights so the bundle can "
                        "carry PyTorch's logits (or pass --no-reference)".format(info.checkpoint_sha256[:12]))
    if weights is None:
        seed = re.search(r"seed (\d+)", (info.extra or {}).get("weights", ""))
        model, checkpoint = models.load_model(info.arch, None, num_classes=info.num_classes,
                                              seed=int(seed.group(1)) if seed else 0)
    else:
        model, checkpoint = models.load_model(info.arch, weights)
        if checkpoint.sha256 != info.checkpoint_sha256:
            raise UserError("{} (sha256 {}...) is not the checkpoint the models were exported from ({})".format(
                weights, checkpoint.sha256[:12], info.checkpoint_sha256[:12] or "random weights"))
    spec = replace(preprocess_for(model, info.preprocess.input_size),
                   normalize_in_graph=info.preprocess.normalize_in_graph)
    return Reference(info.arch, model, spec, num_classes_of(model), checkpoint is None,
                     checkpoint.sha256 if checkpoint else "")


def torch_logits(model, inputs: np.ndarray) -> np.ndarray:
    import torch

    rows = []
    with torch.inference_mode():
        for start in range(0, len(inputs), TORCH_BATCH):
            rows.append(model(torch.from_numpy(inputs[start:start + TORCH_BATCH])).float().numpy())
    return np.concatenate(rows).astype(np.float32)


def reference_logits(reference: Reference, inputs: np.ndarray, info: ModelInfo) -> np.ndarray:
    """The reference's logits: PyTorch on the network's input, or ONNX Runtime on the FP32 ONNX's own input."""
    if reference.onnx_path:
        import onnx

        from calibration.selection import run_logits
        return run_logits(onnx.load(reference.onnx_path), inputs).astype(np.float32)
    return torch_logits(reference.model, network_input(inputs, info.preprocess))


def held_out_samples(data_dir, labels_file, used: Sequence[str], count: int, seed: int):
    """(path, class folder name) of up to ``count`` images from ``data_dir`` that are not reference inputs."""
    from data.datasets import discover, stratified_sample

    images = discover(data_dir, labels_file)
    taken = set(os.path.abspath(p) for p in used)
    rest = images.subset([i for i, p in enumerate(images.paths) if os.path.abspath(p) not in taken])
    chosen = stratified_sample(rest if len(rest) else images, count, seed)
    if chosen.labels is None:
        return [(path, None) for path in chosen.paths], None
    width = len(str(max(chosen.labels)))
    names = chosen.class_names
    return [(path, names[label] if names else "{:0{}d}".format(label, width))
            for path, label in zip(chosen.paths, chosen.labels)], names


def kernel_order_spread(path: str, data: ReferenceData,
                        checked: Optional[np.ndarray] = None) -> Tuple[int, float, np.ndarray]:
    """(images whose class differs, cosine with PyTorch of the other order, kernel noise per image): the model run
    in ONNX Runtime as optimized and as written, the same arithmetic in two orders of float operations. The noise
    is each image's largest logit change between the two orders. ``checked``: the logits deploy.check's run
    already gave (ONNX Runtime with every graph optimization, the optimized order), so only the as-written order
    runs here: each model runs once per order.
    What the order alone changes on this CPU, another backend's kernels may change on the device
    (deploy.reference)."""
    import onnx

    from calibration.selection import run_logits
    from deploy.compare import compare_logits

    model = onnx.load(path)
    optimized = checked if checked is not None else run_logits(model, data.inputs, source=path)
    as_written = run_logits(model, data.inputs, optimize=False, source=path)
    flips = int(np.sum(np.argmax(optimized, axis=1) != np.argmax(as_written, axis=1)))
    noise = np.max(np.abs(np.asarray(optimized, dtype=np.float64) - np.asarray(as_written, dtype=np.float64)), axis=1)
    return flips, compare_logits(data.logits, as_written).cosine_similarity, noise


# The JPEG probes: some reference images encoded here, so the device's own libjpeg is checked whatever format the
# user's images have. Baseline and progressive, with 4:2:0 chroma subsampling (Pillow's default) and without; the
# quality of a typical camera or web JPEG.
JPEG_PROBE_SOURCES = 2
JPEG_QUALITY = 90
JPEG_VARIANTS = (("baseline-420", False, 2), ("progressive-420", True, 2), ("baseline-444", False, 0),
                 ("progressive-444", True, 0))


def jpeg_probes(paths: Sequence[str], probes: Sequence[int], spec, first_number: int):
    """[(probe file name, JPEG bytes, the input the project's preprocessing makes of those bytes)] for the first
    JPEG_PROBE_SOURCES probe images, each in every JPEG_VARIANTS."""
    import io
    import tempfile

    from deploy.preprocess import decode_image, preprocess_file

    made = []
    with tempfile.TemporaryDirectory(prefix="eca-jpeg-probes-") as folder:
        for index in list(probes)[:JPEG_PROBE_SOURCES]:
            image = decode_image(paths[index])
            stem = os.path.splitext(os.path.basename(paths[index]))[0]
            for variant, progressive, subsampling in JPEG_VARIANTS:
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=JPEG_QUALITY, progressive=progressive, subsampling=subsampling)
                name = "{}/{}".format(PROBE_FOLDER, numbered_name(first_number + len(made),
                                                                  "{}.{}.jpg".format(stem, variant)))
                local = os.path.join(folder, "probe.jpg")
                with open(local, "wb") as handle:
                    handle.write(buffer.getvalue())
                made.append((name, buffer.getvalue(), preprocess_file(local, spec)))
            image.close()
    return made


def deepstream_scaling(models: Sequence[str], paths: Sequence[str], own_logits: Sequence[np.ndarray],
                       labels: Optional[np.ndarray] = None) -> Dict[str, Dict[str, object]]:
    """Each model under the geometries Gst-nvinfer can apply (bundling.ecosystem.nvinfer_scaling), emulated on the
    reference images' source files: {model file: {geometry: top-1 agreement in percent with the model's own
    predictions on the project's preprocessing (``own_logits``), "applied": the geometry that agreed most}}.
    The filter is the one the generated config sets (deepstream.scaling_filter)."""
    import onnx

    from bundling.ecosystem.deepstream import nvinfer_normalization, scaling_filter
    from bundling.ecosystem.nvinfer_scaling import GEOMETRIES, choose, nvinfer_input
    from calibration.selection import run_logits
    from deploy.preprocess import decode_image

    measured: Dict[str, Dict[str, object]] = {}
    inputs_for: Dict[Tuple, np.ndarray] = {}
    for path, logits in zip(models, own_logits):
        spec = read_model_info(path).preprocess
        scale, offsets = nvinfer_normalization(spec.mean, spec.std, spec.normalize_in_graph)
        bilinear = scaling_filter(spec.interpolation) != 0
        row: Dict[str, object] = {}
        model = onnx.load(path)
        previous = None  # (inputs, answers): square images letterbox exactly as they stretch, so run them once
        for geometry in GEOMETRIES:
            key = (geometry, bilinear, scale, tuple(offsets), spec.input_size)
            if key not in inputs_for:
                # decoded as the project decodes it (a very large image is reduced, never below 3x the network)
                inputs_for[key] = np.stack([nvinfer_input(np.asarray(decode_image(source, spec.resize_size)),
                                                          spec.input_size,
                                                          spec.input_size, geometry, bilinear, scale, offsets)
                                            for source in paths])
            if previous is not None and np.array_equal(previous[0], inputs_for[key]):
                answers = previous[1]
            else:
                answers = np.argmax(run_logits(model, inputs_for[key]), axis=1)
            previous = (inputs_for[key], answers)
            row[geometry] = 100.0 * float(np.mean(answers == np.argmax(logits, axis=1)))
            if labels is not None:
                row[geometry + "_top1_accuracy"] = 100.0 * float(np.mean(answers == labels))
        row["applied"] = choose({g: row[g] for g in GEOMETRIES})[0]
        measured[os.path.basename(path)] = row
    return measured


def make_bundle_reference(models: Sequence[str], weights=None, data_dir=None, labels_file=None,
                          num_images: int = DEFAULT_REFERENCE_IMAGES, seed: int = 0, progress: bool = False,
                          min_agreement: Optional[float] = None, images=None) -> BundleReference:
    """Reference data for ``models`` from ``data_dir`` (or the sample photos, for ImageNet models only), or from
    ``images`` already loaded (the pipeline's evaluation images), with each model's measured bar."""
    if num_images < 1:
        raise UserError("--reference-images must be at least 1, got {}".format(num_images))
    info = common_model_info(models)
    if images is None and data_dir is None and info.num_classes != IMAGENET_CLASSES:
        raise UserError("the models have {} classes, so the ImageNet sample photos prove nothing about them; give "
                        "--data DIR with the images they were checked on (or pass --no-reference)".format(
                            info.num_classes))
    reference = reference_model(info, weights, models)
    notes = check_against_reference(Artifact(models[0], "onnx", info), reference)
    if images is None:
        images = load_images(data_dir, labels_file, info.preprocess, num_images, seed=seed, progress=progress,
                             exclude=chosen_digests(read_model_info(path) for path in models))
        notes.extend(images.loaded.notes if images.loaded is not None else [])
    array = np.ascontiguousarray(images.array, dtype=np.float32)
    probes = pick_probes(images.paths)
    jpegs = jpeg_probes(images.paths, probes, info.preprocess, len(probes))
    probe_inputs = [array[probes]] if probes else []
    probe_inputs += [np.stack([made for _, _, made in jpegs]).astype(np.float32)] if jpegs else []
    data = ReferenceData(inputs=array, logits=reference_logits(reference, array, info),
                         spec=info.preprocess, labels=images.labels, arch=info.arch,
                         checkpoint_sha256=info.checkpoint_sha256, min_agreement=min_agreement,
                         source=images.source if data_dir is None else os.path.basename(
                             os.path.normpath(os.fspath(data_dir))),
                         probe_files=["{}/{}".format(PROBE_FOLDER, numbered_name(i, os.path.basename(
                                          images.paths[index]))) for i, index in enumerate(probes)]
                                     + [name for name, _, _ in jpegs],
                         probe_inputs=np.concatenate(probe_inputs) if probe_inputs else None)
    measured = [measure_artifact(path, data, bar=floor_bar(os.path.basename(path), read_model_info(path).precision))
                for path in models]
    cpu_checks = [check for check, _ in measured]
    failed = [c for c in cpu_checks if c.status != "PASS"]
    if failed and reference.random_weights:
        raise UserError("the models have random weights (no checkpoint), and {} rebuilt with the recorded seed does "
                        "not give their logits (other model options, such as a narrower stem?); export from a "
                        "checkpoint and give it with --weights, or pass --no-reference".format(info.arch))
    if failed:
        raise CheckFailedError("on this CPU, before bundling: " + "; ".join(
            "{}: {}".format(c.name, "; ".join(c.reasons)) for c in failed))
    below = [c for c in cpu_checks if min_agreement is not None and c.top1_agreement < min_agreement]
    if below:
        raise CheckFailedError("{} agree(s) {} with PyTorch on {} reference images on this CPU, below --min-agreement "
                               "{:g}%; a device cannot do better than the CPU measured".format(
                                   ", ".join(c.name for c in below),
                                   ", ".join("{:.2f}%".format(c.top1_agreement) for c in below), len(array),
                                   min_agreement))
    data.bars = [bar_from_measured(c.name, sha256_file(path), c.precision, c.top1_agreement, c.cosine_similarity,
                                   len(array), min_agreement, *kernel_order_spread(path, data, logits),
                                   cpu_logits=logits)
                 for (c, logits), path in zip(measured, models)]
    for check, bar in zip(cpu_checks, data.bars):
        check.bar = bar.to_dict()
    cpu_logits = [logits for _, logits in measured]
    if images.paths and all(logits is not None for logits in cpu_logits):  # nvinfer scales the source files
        data.nvinfer = deepstream_scaling(models, images.paths, cpu_logits, images.labels)
    samples, class_names = [], None
    if data_dir is not None:
        samples, class_names = held_out_samples(data_dir, labels_file, images.paths, SAMPLE_IMAGES, seed)
    return BundleReference(data, samples, class_names, cpu_checks, notes,
                           probe_sources=[images.paths[index] for index in probes],
                           probe_payloads={name: payload for name, payload, _ in jpegs})
