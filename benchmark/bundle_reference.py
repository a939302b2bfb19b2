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
from typing import List, Optional, Sequence, Tuple

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
    is each image's largest logit change between the orders and ``checked`` (deploy.check's own run, batch 1).
    What the order alone changes on this CPU, another backend's kernels may change on the device
    (deploy.reference)."""
    import onnx

    from calibration.selection import run_logits
    from deploy.compare import compare_logits

    model = onnx.load(path)
    optimized = run_logits(model, data.inputs, source=path)
    as_written = run_logits(model, data.inputs, optimize=False, source=path)
    flips = int(np.sum(np.argmax(optimized, axis=1) != np.argmax(as_written, axis=1)))
    runs = [optimized, as_written] + ([np.asarray(checked, dtype=np.float64)] if checked is not None else [])
    noise = np.max([np.max(np.abs(a - b), axis=1) for i, a in enumerate(runs) for b in runs[i + 1:]], axis=0)
    return flips, compare_logits(data.logits, as_written).cosine_similarity, noise


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
    data = ReferenceData(inputs=array, logits=reference_logits(reference, array, info),
                         spec=info.preprocess, labels=images.labels, arch=info.arch,
                         checkpoint_sha256=info.checkpoint_sha256, min_agreement=min_agreement,
                         source=images.source if data_dir is None else os.path.basename(
                             os.path.normpath(os.fspath(data_dir))),
                         probe_files=["{}/{}".format(PROBE_FOLDER, numbered_name(i, os.path.basename(
                                          images.paths[index]))) for i, index in enumerate(probes)],
                         probe_inputs=array[probes] if probes else None)
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
    samples, class_names = [], None
    if data_dir is not None:
        samples, class_names = held_out_samples(data_dir, labels_file, images.paths, SAMPLE_IMAGES, seed)
    return BundleReference(data, samples, class_names, cpu_checks, notes,
                           probe_sources=[images.paths[index] for index in probes])
