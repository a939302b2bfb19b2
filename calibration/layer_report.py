"""Per-layer error of a Q/DQ or FP16 model against its FP32 model: the output of every compute layer (Conv,
Gemm, MatMul) of both, on the same images, as SQNR, cosine similarity and largest absolute error.

This is Polygraphy's ``--onnx-outputs mark all`` comparison, made to work between graphs whose tensor names
differ: layers are matched by node name (our quantizer and FP16 converter keep them), and what is left is
matched in network order by op type and weight shape. Both models run in ONNX Runtime with graph
optimizations off, so no layer is fused away and a Q/DQ model computes its reference Q/DQ arithmetic.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.errors import CheckFailedError, UserError

from .ranges import exposing_session, fixed_batch_of

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
PASS_THROUGH_OPS = ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity")
DEFAULT_NUM_IMAGES = 32
MAX_SQNR_DB = 200.0     # the SQNR of identical outputs (no error at all), so JSON stays finite
BATCH = 16


@dataclass
class LayerError:
    name: str
    op: str
    depth: int               # index among the FP32 model's compute layers, in network order
    sqnr_db: float
    cosine: float
    max_abs_error: float
    other_name: str = ""
    quantized: bool = False  # whether the other model's layer reads Q/DQ inputs (runs in INT8)

    def to_dict(self) -> Dict[str, object]:
        return {"name": self.name, "op": self.op, "depth": self.depth, "sqnr_db": round(self.sqnr_db, 3),
                "cosine": round(self.cosine, 6), "max_abs_error": float("{:.6g}".format(self.max_abs_error)),
                "other_name": self.other_name, "quantized": self.quantized}


@dataclass
class LayerReport:
    layers: List[LayerError]     # worst (lowest SQNR) first
    num_images: int
    unmatched: List[str]         # FP32 compute layers with no counterpart in the other model

    @property
    def worst(self) -> Optional[str]:
        return self.layers[0].name if self.layers else None

    def to_dict(self) -> Dict[str, object]:
        return {"layers": [layer.to_dict() for layer in self.layers], "worst": self.worst,
                "num_images": self.num_images, "unmatched": list(self.unmatched)}


def quantized_layers(model) -> List[str]:
    """Names of the compute layers with a DequantizeLinear feeding an input (those that run in INT8)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [node.name for node in compute_nodes(model)
            if any(producers.get(name) is not None and producers[name].op_type == "DequantizeLinear"
                   for name in node.input)]


def compute_nodes(model) -> list:
    return [node for node in model.graph.node if node.op_type in COMPUTE_OPS]


def _weight_shape(model, node) -> Optional[Tuple[int, ...]]:
    """Shape of the initializer behind input 1 (the weight), through any Q/DQ or Cast in front of it."""
    producers = {out: n for n in model.graph.node for out in n.output}
    initializers = {init.name: init for init in model.graph.initializer}
    name = node.input[1] if len(node.input) > 1 else ""
    for _ in range(4):
        if name in initializers:
            return tuple(initializers[name].dims)
        parent = producers.get(name)
        if parent is None or parent.op_type not in PASS_THROUGH_OPS:
            return None
        name = parent.input[0]
    return None


def match_layers(fp32, other) -> Tuple[List[Tuple[int, object, object]], List[str]]:
    """[(depth, FP32 node, other node)] for each compute layer of ``other``, and the FP32 layers left unmatched."""
    reference = compute_nodes(fp32)
    candidates = compute_nodes(other)
    by_name = {node.name: node for node in candidates if node.name}
    pairs = {}
    used = set()
    for depth, node in enumerate(reference):
        twin = by_name.get(node.name) if node.name else None
        if twin is not None and twin.op_type == node.op_type:
            pairs[depth] = twin
            used.add(id(twin))
    # What names did not settle: the next unused layer of the same op and weight shape, in network order
    # (searching on from the last match, then from the start: a quantizer may order parallel branches
    # differently, e.g. CBAM's two MLP passes).
    rest = [node for node in candidates if id(node) not in used]
    taken = [False] * len(rest)
    position = 0
    for depth, node in enumerate(reference):
        if depth in pairs:
            continue
        shape = _weight_shape(fp32, node)
        for index in list(range(position, len(rest))) + list(range(position)):
            twin = rest[index]
            if not taken[index] and twin.op_type == node.op_type and _weight_shape(other, twin) == shape:
                pairs[depth] = twin
                taken[index] = True
                position = index + 1
                break
    matched = [(depth, reference[depth], pairs[depth]) for depth in sorted(pairs)]
    unmatched = [reference[depth].name or reference[depth].output[0]
                 for depth in range(len(reference)) if depth not in pairs]
    return matched, unmatched


class _Accumulator:
    """Error sums over batches: signal and noise energy, the dot product, norms and the largest error."""

    def __init__(self):
        self.signal = self.noise = self.dot = self.other = 0.0
        self.max_abs = 0.0

    def update(self, reference: np.ndarray, other: np.ndarray) -> None:
        reference = reference.astype(np.float64).ravel()
        other = other.astype(np.float64).ravel()
        if reference.shape != other.shape:
            raise UserError("layer outputs have different sizes ({} and {}); the models do not match".format(
                reference.size, other.size))
        error = other - reference
        self.signal += float(reference @ reference)
        self.noise += float(error @ error)
        self.dot += float(reference @ other)
        self.other += float(other @ other)
        if error.size:
            self.max_abs = max(self.max_abs, float(np.abs(error).max()))

    def sqnr_db(self) -> float:
        if self.noise == 0.0:
            return MAX_SQNR_DB
        if self.signal == 0.0:
            return -MAX_SQNR_DB
        return min(MAX_SQNR_DB, 10.0 * math.log10(self.signal / self.noise))

    def cosine(self) -> float:
        norm = math.sqrt(self.signal * self.other)
        return self.dot / norm if norm > 0 else (1.0 if self.noise == 0.0 else 0.0)


def compare_layers(fp32, other, images: np.ndarray, progress: bool = False,
                   sources: Tuple[str, str] = ("the FP32 model", "the other model"),
                   image_names: Optional[Sequence[str]] = None) -> LayerReport:
    """The per-layer error of ``other`` against ``fp32`` (onnx.ModelProto each) on preprocessed ``images``."""
    from deploy.progress import progress_bar
    matched, unmatched = match_layers(fp32, other)
    if not matched:
        raise UserError("no compute layer (Conv, Gemm, MatMul) of the two models could be matched")
    fp32_names = [node.output[0] for _, node, _ in matched]
    other_names = [node.output[0] for _, _, node in matched]
    from deploy.runners.onnxruntime import run_session
    sessions = (exposing_session(fp32, fp32_names, sources[0]), exposing_session(other, other_names, sources[1]))
    accumulators = [_Accumulator() for _ in matched]
    fixed = fixed_batch_of(fp32) or fixed_batch_of(other)
    step = fixed or BATCH
    usable = len(images) - len(images) % fixed if fixed else len(images)
    if usable == 0:
        raise UserError("the models have a fixed batch of {} but only {} images were given".format(fixed, len(images)))
    with progress_bar(usable, desc="comparing layers", enabled=progress) as bar:
        for start in range(0, usable, step):
            batch = np.ascontiguousarray(images[start:start + step], dtype=np.float32)
            reference = run_session(sessions[0], fp32_names, {sessions[0].get_inputs()[0].name: batch}, sources[0])
            outputs = run_session(sessions[1], other_names, {sessions[1].get_inputs()[0].name: batch}, sources[1])
            _check_finite_layers(matched, (reference, outputs), sources, start, image_names, usable)
            for accumulator, a, b in zip(accumulators, reference, outputs):
                accumulator.update(a, b)
            bar.update(len(batch))
    int8 = set(quantized_layers(other))
    layers = [LayerError(name=node.name or node.output[0], op=node.op_type, depth=depth,
                         sqnr_db=acc.sqnr_db(), cosine=acc.cosine(), max_abs_error=acc.max_abs,
                         other_name=twin.name or twin.output[0], quantized=bool(twin.name) and twin.name in int8)
              for (depth, node, twin), acc in zip(matched, accumulators)]
    layers.sort(key=lambda layer: (layer.sqnr_db, layer.depth))
    return LayerReport(layers=layers, num_images=usable, unmatched=unmatched)


def _check_finite_layers(matched, outputs, sources, start: int, image_names, total: int) -> None:
    """NaN has no SQNR: a layer of either model whose output holds NaN or an infinity (a NaN weight, an overflow)
    would otherwise read as 200 dB (min() keeps its first argument against NaN). CheckFailedError naming the
    first such layer (in network order) and the images, so the report never shows a number for it."""
    from deploy.compare import describe_images, nonfinite_rows
    for side in (0, 1):
        for (_, node, twin), values in zip(matched, outputs[side]):
            rows = nonfinite_rows(values)
            if len(rows):
                layer = node if side == 0 else twin
                names = None if image_names is None else list(image_names)
                raise CheckFailedError("{}: layer {} ({}) outputs NaN or infinite values for {}; its error cannot "
                                       "be measured".format(sources[side], layer.name or layer.output[0],
                                                            layer.op_type, describe_images(
                                                                [start + int(r) for r in rows], names, total)))


def load_pair(fp32_path: str, other_path: str):
    """(FP32 ModelProto in its lean attention form, other ModelProto, FP32 ModelInfo) with one-line errors."""
    import onnx
    from deploy.metadata import read_model_info
    from exporter.attention_forms import to_lean
    for path in (fp32_path, other_path):
        if not str(path).endswith(".onnx"):
            raise UserError("{} is not an .onnx model".format(path))
    info = read_model_info(fp32_path)
    if info.precision != "fp32":
        raise UserError("{} is {}, not the FP32 model; give the FP32 model first".format(fp32_path, info.precision))
    other_info = read_model_info(other_path)
    if other_info.preprocess.input_size != info.preprocess.input_size:
        raise UserError("{} takes {} px images but {} takes {} px; compare models of one export".format(
            other_path, other_info.preprocess.input_size, fp32_path, info.preprocess.input_size))
    fp32 = onnx.load(fp32_path)
    to_lean(fp32)  # the Q/DQ models are built from the lean form; its extra ones-convs have no counterpart
    return fp32, onnx.load(other_path), info


def plot_sqnr(report: LayerReport, path: str, title: str = "") -> str:
    """SQNR along the network's depth (FP32 layer order), the worst layer marked; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from deploy.fileio import atomic_path
    layers = sorted(report.layers, key=lambda layer: layer.depth)
    depth = [layer.depth for layer in layers]
    sqnr = [layer.sqnr_db for layer in layers]
    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot(depth, sqnr, "-", color="0.6", linewidth=1)
    any_int8 = any(layer.quantized for layer in layers)
    for op, marker in (("Conv", "o"), ("Gemm", "s"), ("MatMul", "^")):
        for quantized in (True, False):
            points = [(layer.depth, layer.sqnr_db) for layer in layers
                      if layer.op == op and layer.quantized == quantized]
            if not points:
                continue
            label = op + (" (int8)" if quantized else " (float)" if any_int8 else "")
            axis.plot(*zip(*points), marker, markersize=5, label=label,
                      fillstyle="full" if quantized or not any_int8 else "none")
    worst = report.layers[0]
    side = worst.depth / max(max(depth), 1)  # keep the label inside the axes at either end
    axis.annotate("worst: {} ({:.1f} dB)".format(worst.name, worst.sqnr_db), (worst.depth, worst.sqnr_db),
                  xytext=(0, -28), textcoords="offset points", fontsize=8,
                  ha="right" if side > 0.7 else "left" if side < 0.3 else "center",
                  arrowprops={"arrowstyle": "->", "color": "0.3"})
    low = min(sqnr)
    axis.set_ylim(min(0.0, low - 10.0), max(sqnr) + 5.0)
    axis.set_xlabel("compute layer, in network order")
    axis.set_ylabel("SQNR against FP32 (dB, higher is better)")
    axis.set_title(title or "Per-layer SQNR on {} images".format(report.num_images), fontsize=10)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return path

