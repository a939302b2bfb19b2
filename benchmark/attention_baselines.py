"""Attention modules against their baselines, deployed: ResNet / SE / CBAM / ECA rows at R-18 and R-34, measured once deployed.

The paper compares the attention modules by FLOPs, where they look free. Here each model is exported,
quantized for the CPU (INT8 Q/DQ) with the sample photos, and timed at batch 1 in PyTorch, ONNX Runtime FP32
and ONNX Runtime INT8 on the same threads, beside its #Param and GFLOPs (the paper's binary units). Without a weights
folder the weights are random, so only agreement between backends is meaningful, not accuracy.
"""
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

from deploy.errors import UserError

from .parity_and_speed import BenchmarkOptions, EvalImages, benchmark_engine, load_images, load_reference

# (zoo name, method, CNN) in the seed's row order.
BASELINE_MODELS = (
    ("resnet18", "ResNet", "R-18"),
    ("se_resnet18", "SENet", "R-18"),
    ("cbam_resnet18", "CBAM", "R-18"),
    ("eca_resnet18", "ECA-Net", "R-18"),
    ("resnet34", "ResNet", "R-34"),
    ("se_resnet34", "SENet", "R-34"),
    ("cbam_resnet34", "CBAM", "R-34"),
    ("eca_resnet34", "ECA-Net", "R-34"),
)
# The paper's published figures: #Param (M, binary), GFLOPs (binary), ImageNet top-1 and top-5.
PAPER_FIGURES = {
    "resnet18": (11.148, 1.699, 70.40, 89.45),
    "se_resnet18": (11.231, 1.700, 70.59, 89.78),
    "cbam_resnet18": (11.234, 1.700, 70.73, 89.91),
    "eca_resnet18": (11.148, 1.700, 70.78, 89.92),
    "resnet34": (20.788, 3.427, 73.31, 91.40),
    "se_resnet34": (20.938, 3.428, 73.87, 91.65),
    "cbam_resnet34": (20.943, 3.428, 74.01, 91.76),
    "eca_resnet34": (20.788, 3.428, 74.21, 91.83),
}
CPU_TARGET = "cpu"
BASELINES_HEADING = "## Table A, deployed"  # report text: the paper's name for this comparison
WEIGHT_SUFFIXES = (".pth", ".pth.tar", ".pt")


@dataclass
class BaselineRow:
    arch: str
    method: str
    cnn: str
    params_m: float
    gflops: float
    paper_top1: float
    weights: str
    fp32_top1_agreement: Optional[float] = None  # ORT FP32 vs PyTorch, percent
    int8_top1_agreement: Optional[float] = None  # ORT INT8 vs PyTorch, percent
    int8_cosine: Optional[float] = None
    top1_accuracy: Dict[str, float] = field(default_factory=dict)  # per backend, with labeled data
    torch_ms: Optional[float] = None  # p50 latency at batch 1
    ort_fp32_ms: Optional[float] = None
    ort_int8_ms: Optional[float] = None
    seconds: float = 0.0


@dataclass
class BaselineTable:
    rows: List[BaselineRow]
    threads: int
    batch_size: int
    iterations: int
    data: str
    seconds: float
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        result = asdict(self)
        result["rows"] = [asdict(r) for r in self.rows]
        return result


def find_weights(weights_dir, arch: str) -> Optional[str]:
    if not weights_dir:
        return None
    for suffix in WEIGHT_SUFFIXES:
        path = os.path.join(os.fspath(weights_dir), arch + suffix)
        if os.path.isfile(path):
            return path
    return None


def _p50(backend) -> Optional[float]:
    timing = backend.timings[0] if backend.timings else None
    return timing.latency["p50_ms"] if timing else None


def measure_model(arch: str, method: str, cnn: str, out_dir: str, weights: Optional[str], images: EvalImages,
                  options: BenchmarkOptions) -> BaselineRow:
    """Export, quantize for the CPU (calibrated on ``images``) and time one model."""
    from calibration.api import calibrate
    from exporter import export_model
    from models.complexity import complexity

    started = time.perf_counter()
    reference = load_reference(arch, weights)
    cost = complexity(reference.model, reference.spec.input_size)
    fp32 = export_model(arch, os.path.join(out_dir, arch + ".onnx"), weights=weights).path
    calibration = calibrate(fp32, targets=(CPU_TARGET,), fp16=False, progress=False, images=images.loaded,
                            num_images=len(images.array))
    int8 = calibration.int8_models[CPU_TARGET]
    result = benchmark_engine([fp32, int8], arch, weights=weights, options=options, reference=reference,
                              images=images)
    ort_fp32, ort_int8 = result.artifacts
    row = BaselineRow(arch, method, cnn, cost.mparams_binary, cost.gmacs_binary, PAPER_FIGURES[arch][2],
                    "checkpoint" if weights else "random")
    row.fp32_top1_agreement = ort_fp32.top1_agreement
    row.int8_top1_agreement = ort_int8.top1_agreement
    row.int8_cosine = ort_int8.cosine_similarity
    if result.data["labeled"]:
        row.top1_accuracy = {"pytorch": result.reference.top1_accuracy, "ort_fp32": ort_fp32.top1_accuracy,
                             "ort_int8": ort_int8.top1_accuracy}
    row.torch_ms, row.ort_fp32_ms, row.ort_int8_ms = _p50(result.reference), _p50(ort_fp32), _p50(ort_int8)
    row.seconds = time.perf_counter() - started
    return row


def measure_baselines(out_dir, weights_dir=None, data_dir=None, labels_file=None, archs: Sequence[str] = None,
                    threads: Optional[int] = None, warmup: int = 2, iterations: int = 10, num_images: int = 64,
                    progress: bool = True, log=None) -> BaselineTable:
    """Measure every baseline model (or ``archs``); ``log`` receives one line per finished model."""
    known = {arch: (method, cnn) for arch, method, cnn in BASELINE_MODELS}
    archs = list(archs or known)
    unknown = [a for a in archs if a not in known]
    if unknown:
        raise UserError("not one of the baseline models: {}; choose from {}".format(", ".join(unknown), ", ".join(known)))
    if weights_dir is not None and not os.path.isdir(os.fspath(weights_dir)):
        raise UserError("weights folder not found: {}".format(weights_dir))
    out_dir = os.path.abspath(os.fspath(out_dir))
    options = BenchmarkOptions(batch_sizes=(1,), warmup=warmup, iterations=iterations, threads=threads,
                               num_images=num_images, progress=progress)
    # Every model takes 224x224 ImageNet preprocessing, so the images are decoded once for all eight.
    spec = load_reference(archs[0]).spec
    images = load_images(data_dir, labels_file, spec, num_images, progress=progress)
    started = time.perf_counter()
    rows, notes = [], []
    for arch in archs:
        weights = find_weights(weights_dir, arch)
        if weights_dir is not None and weights is None:
            notes.append("{}: no {}{{{}}} in {}; random weights".format(
                arch, arch, ",".join(WEIGHT_SUFFIXES), weights_dir))
        row = measure_model(arch, known[arch][0], known[arch][1], out_dir, weights, images, options)
        rows.append(row)
        if log is not None:
            log("table A: {} done in {:.0f} s".format(arch, row.seconds))
    if weights_dir is None:
        notes.append("random weights (no weights folder): agreement between backends is meaningful, accuracy is not")
    return BaselineTable(rows, options.resolved_threads(), 1, iterations, images.source,
                        time.perf_counter() - started, notes)


def _f(value, pattern="{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def to_markdown(result: BaselineTable) -> str:
    from .report import markdown_table

    header = ["Method", "CNN", "#Param", "GFLOPs", "Top-1 (paper)", "weights", "FP32 agree %", "INT8 agree %",
              "INT8 cosine", "PyTorch ms", "ORT FP32 ms", "ORT INT8 ms", "INT8 speed-up"]
    rows = []
    for r in result.rows:
        speedup = r.ort_fp32_ms / r.ort_int8_ms if r.ort_fp32_ms and r.ort_int8_ms else None
        rows.append([r.method, r.cnn, "{:.3f}M".format(r.params_m), "{:.3f}".format(r.gflops),
                     "{:.2f}".format(r.paper_top1), r.weights, _f(r.fp32_top1_agreement),
                     _f(r.int8_top1_agreement), _f(r.int8_cosine, "{:.4f}"), _f(r.torch_ms), _f(r.ort_fp32_ms),
                     _f(r.ort_int8_ms), _f(speedup, "{:.2f}x")])
    lines = [
        BASELINES_HEADING,
        "",
        "#Param = params / 2^20 and GFLOPs = MACs / 2^30 at 1x3x224x224, as in the paper. Latency: p50 at batch {}, "
        "{} threads, {} iterations; agreement: top-1 agreement with PyTorch on {}.".format(
            result.batch_size, result.threads, result.iterations, result.data),
        "",
        markdown_table(header, rows),
        "",
        "Measured in {:.0f} s.".format(result.seconds),
    ]
    lines += ["- " + note for note in result.notes]
    return "\n".join(lines) + "\n"

