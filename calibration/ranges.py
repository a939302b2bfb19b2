"""Activation ranges: run the FP32 model in ONNX Runtime over the calibration images, once, and pick a
clipping threshold ``amax`` per tensor with one of four methods.

Every artifact reads these ranges: the Q/DQ models of both targets (through ONNX Runtime's quantizer), the
TensorRT calibration cache and the JSON report, so a method gives the same numbers everywhere.

Why statistics are gathered here and not with ``onnxruntime.quantization.calibrate``:

* ORT's entropy calibrator is MXNet's signed-histogram variant. With its defaults (128 bins, 128 quantized
  bins) it tries exactly one threshold, the maximum, so it is min-max; with 2048 bins its Python loop took
  1.05 s for one tensor here (ECA-ResNet-50 has 219 activation tensors). TensorRT's entropy calibrator works on
  a histogram of |x| from 0 (GTC 2017, "8-bit inference with TensorRT"), which is what is done here, vectorized.
* ORT's |x| histogram (percentile calibrator) starts at the smallest |x| of the first batch and drops later
  values below it, so bin indices do not measure thresholds from 0, which entropy and MSE need.
* ORT has no MSE calibrator.

One pass over the data feeds every method: per tensor the exact min and max and a 2048-bin histogram of |x|
on [0, 2048 * width). The width is set by the first batch and doubles (merging bin pairs, which is exact) when a
later batch exceeds the range, so memory stays fixed whatever the data. The methods then pick amax:
``minmax`` the largest |x|; ``percentile`` the upper edge of the bin holding that percentile of |x|;
``entropy`` TensorRT's KL-divergence search (EntropyCalibration2); ``mse`` the threshold with the least
expected squared quantization error over the histogram (as NVIDIA's pytorch-quantization does).
"""
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.errors import UserError
from exporter.input_normalization import normalized_input
from precision.qdq import GATE_OPS

METHODS = ("entropy", "minmax", "percentile", "mse")
DEFAULT_METHOD = "entropy"
DEFAULT_PERCENTILE = 99.99
NUM_BINS = 2048
QUANT_LEVELS = 128     # int8 symmetric: |q| in 0..127, so 128 levels over [0, amax]
START_BIN = 128        # the smallest threshold TensorRT's entropy search tries (one bin per level)
ACTIVATION_BUDGET_BYTES = 512 << 20  # memory for one batch of all activations during calibration
SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Identity")

# The TensorRT calibrator whose cache the ranges are written as. TensorRT reads cached scales verbatim, but
# rejects a cache whose algorithm differs from the calibrator's, so percentile and MSE caches are labelled for
# IInt8EntropyCalibrator2, the calibrator a builder uses by default.
TRT_ALGORITHMS = {
    "entropy": "EntropyCalibration2",
    "minmax": "MinMaxCalibration",
    "percentile": "EntropyCalibration2",
    "mse": "EntropyCalibration2",
}


@dataclass(frozen=True)
class TensorRange:
    """``amax`` is the symmetric clipping threshold; ``min``/``max`` are what was observed."""

    amax: float
    min: float
    max: float

    @property
    def clipped(self) -> Tuple[float, float]:
        """[min, max] clipped to [-amax, amax]: the asymmetric range for uint8 targets.

        Its larger end is amax, so a symmetric quantizer fed this range gets back the same amax.
        """
        return max(self.min, -self.amax), min(self.max, self.amax)

    @property
    def scale(self) -> float:
        """amax / 127 as float32, with ONNX Runtime's rule for an empty range (scale 1, as in compute_scale_zp)."""
        scale = np.float32(self.amax / 127.0)
        return float(scale) if scale >= np.finfo(np.float32).tiny else 1.0


@dataclass
class CalibrationRanges:
    method: str
    num_images: int
    seed: int
    percentile: Optional[float]
    tensors: "OrderedDict[str, TensorRange]"  # topological order, network input first

    @property
    def trt_algorithm(self) -> str:
        return TRT_ALGORITHMS[self.method]

    def scales(self) -> "OrderedDict[str, float]":
        return OrderedDict((name, r.scale) for name, r in self.tensors.items())

    def to_tensors_data(self):
        """ONNX Runtime's TensorsData, for quantize_static's calibration cache (its range-override path)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
        data = {}
        for name, r in self.tensors.items():
            low, high = r.clipped
            data[name] = TensorData(lowest=np.array(low, dtype=np.float32), highest=np.array(high, dtype=np.float32))
        return TensorsData(CalibrationMethod.MinMax, data)

    def to_dict(self) -> Dict[str, object]:
        return {
            "method": self.method,
            "percentile": self.percentile,
            "num_images": self.num_images,
            "seed": self.seed,
            "num_bins": NUM_BINS,
            "trt_algorithm": self.trt_algorithm,
            "tensors": OrderedDict((name, {"amax": r.amax, "min": r.min, "max": r.max, "scale": r.scale})
                                   for name, r in self.tensors.items()),
        }


# -- the statistics ---------------------------------------------------------------------------------------

class TensorStats:
    """Exact min and max, and a histogram of |x| on [0, NUM_BINS * width), merged over batches."""

    def __init__(self):
        self.min = np.inf
        self.max = -np.inf
        self.width = 0.0
        self.hist = np.zeros(NUM_BINS, dtype=np.int64)

    @property
    def abs_max(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.max >= self.min else 0.0

    def update(self, values: np.ndarray) -> None:
        values = values.ravel()
        if values.size == 0:
            return
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        magnitudes = np.abs(values)
        top = float(magnitudes.max())
        if not np.isfinite(top):
            raise ValueError("non-finite values")
        if top == 0.0:
            self.hist[0] += values.size
            return
        if self.width == 0.0:
            # The first non-zero batch sets the resolution (its max lands in the last bin); zeros seen before
            # all sit in bin 0 anyway.
            self.width = top / (NUM_BINS - 0.5)
        # Bin index floor(|x| / width) in float64: halving a quotient is exact in binary floating point, so every
        # value binned before a coarsening sits exactly where binning at the new width would put it.
        while math.floor(top / self.width) >= NUM_BINS:
            self._coarsen()
        index = (magnitudes.astype(np.float64) / self.width).astype(np.int64)
        self.hist += np.bincount(index, minlength=NUM_BINS)

    def _coarsen(self) -> None:
        """Double the bin width; merging neighbouring pairs keeps every earlier count in its exact place."""
        merged = self.hist.reshape(-1, 2).sum(axis=1)
        self.hist = np.concatenate([merged, np.zeros(NUM_BINS - merged.size, dtype=np.int64)])
        self.width *= 2.0

    def edges(self) -> np.ndarray:
        return np.arange(NUM_BINS + 1, dtype=np.float64) * self.width


def compute_amax(stats: TensorStats, method: str, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The clipping threshold of one tensor, never above the largest |x| seen."""
    top = stats.abs_max
    if method == "minmax" or top == 0.0 or stats.width == 0.0:
        return top
    if method == "percentile":
        amax = percentile_amax(stats.hist, stats.edges(), percentile)
    elif method == "entropy":
        amax = entropy_amax(stats.hist, stats.edges())
    elif method == "mse":
        amax = mse_amax(stats.hist, stats.edges())
    else:
        raise UserError("unknown calibration method {!r}; choose one of {}".format(method, ", ".join(METHODS)))
    return float(min(amax, top))


def percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """The upper edge of the bin in which the cumulative share of |x| reaches ``percentile``."""
    cdf = np.cumsum(hist, dtype=np.float64) / max(hist.sum(), 1)
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return float(edges[min(index + 1, len(edges) - 1)])


def _last_nonzero(hist: np.ndarray) -> int:
    nonzero = np.flatnonzero(hist)
    return int(nonzero[-1]) if nonzero.size else 0


def entropy_amax(hist: np.ndarray, edges: np.ndarray, levels: int = QUANT_LEVELS, start: int = START_BIN) -> float:
    """TensorRT's entropy calibration: the threshold whose 128-level quantization loses least information.

    For each candidate i (keep bins [0, i)), P is the histogram with the clipped outliers added to its last
    bin, and Q is P's first i bins merged into ``levels`` groups, each spread evenly over its non-empty bins.
    The answer is the edge i with the least KL(P || Q); ties go to the larger threshold. The loop over bins
    of the textbook version is replaced by prefix sums, since inside one group Q is constant:
    KL * T = sum h log h - T log T - sum_groups A_g log(S_g / (N_g C_i)), with S_g the group's count, N_g its
    non-empty bins, A_g = S_g (+ the outliers for the last group) and C_i the count below edge i.
    """
    h = hist.astype(np.float64)
    # The bin at zero holds every value a ReLU clipped: up to half the tensor. Kept, it dominates P and pulls
    # the threshold far down (measured: 0.35-0.6 of the max on ReLU outputs); NVIDIA's pytorch-quantization,
    # which follows TensorRT's calibrator, levels it with its neighbour, and so does this.
    if len(h) > 1:
        h[0] = h[1]
    stop = _last_nonzero(hist) + 1
    if stop <= start:
        return float(edges[stop])
    total = h.sum()
    cum = np.concatenate([[0.0], np.cumsum(h)])
    nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        hlogh = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    cum_hlogh = np.concatenate([[0.0], np.cumsum(hlogh)])

    candidates = np.arange(start, stop + 1)                                   # i: number of bins kept
    bounds = np.ceil(np.outer(candidates, np.arange(levels + 1)) / levels).astype(np.int64)  # group starts
    group_sum = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    group_nonzero = nonzero[bounds[:, 1:]] - nonzero[bounds[:, :-1]]
    kept = cum[candidates]
    outliers = total - kept
    last = h[candidates - 1] + outliers                                       # P's last bin
    weights = group_sum.copy()
    weights[:, -1] += outliers
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(group_sum / (np.maximum(group_nonzero, 1) * kept[:, None]))
        cross = np.where(group_nonzero > 0, weights * log_q, 0.0).sum(axis=1)
        self_info = cum_hlogh[candidates - 1] + np.where(last > 0, last * np.log(np.maximum(last, 1e-300)), 0.0)
        kl = (self_info - total * np.log(total) - cross) / total
    # Outliers folded into an empty last bin have no counterpart in Q: infinite divergence.
    kl[(h[candidates - 1] == 0) & (outliers > 0)] = np.inf
    best = len(kl) - 1 - int(np.argmin(kl[::-1]))
    return float(edges[candidates[best]])


MSE_COARSE_STRIDE = 8  # mse tries every 8th threshold, then every one within 8 bins of the best of those


def mse_amax(hist: np.ndarray, edges: np.ndarray, start: int = START_BIN, stride: int = MSE_COARSE_STRIDE) -> float:
    """The threshold (a bin edge) minimizing the expected squared error of 8-bit symmetric fake quantization.

    A coarse search at ``stride`` and a fine one around its best cost a tenth of trying all ~2000 edges, which
    dominated `--method auto` (it needs mse for every tensor). The error curve is nearly smooth at this
    resolution: on heavy-tailed test histograms the threshold was the full search's or within 3.5% of it. Bins above a threshold all quantize to it, so
    their error comes from suffix sums; only the bins below it are rounded one by one.
    """
    stop = _last_nonzero(hist) + 1
    if stop <= start:
        return float(edges[stop])
    centers = (edges[:stop] + edges[1:stop + 1]) / 2.0
    counts = hist[:stop].astype(np.float64)
    suffix = [np.concatenate([np.cumsum((counts * centers ** power)[::-1])[::-1], [0.0]]) for power in (0, 1, 2)]

    def errors(index: np.ndarray) -> np.ndarray:  # index: candidate i = threshold edges[i], bins [0, i) inside
        amax = edges[index]
        width = int(index.max())
        step = (amax / (QUANT_LEVELS - 1))[:, None]
        inside = np.arange(width)[None, :] < index[:, None]
        rounded = np.minimum(np.round(centers[None, :width] / step), QUANT_LEVELS - 1) * step
        error_inside = np.where(inside, (rounded - centers[None, :width]) ** 2 * counts[None, :width], 0.0).sum(axis=1)
        error_clipped = suffix[2][index] - 2.0 * amax * suffix[1][index] + amax ** 2 * suffix[0][index]
        return error_inside + np.maximum(error_clipped, 0.0)

    coarse = np.unique(np.append(np.arange(start, stop + 1, stride), stop))
    best = int(coarse[int(np.argmin(errors(coarse)))])
    fine = np.arange(max(start, best - stride), min(stop, best + stride) + 1)
    return float(edges[int(fine[int(np.argmin(errors(fine)))])])


# -- running the model ------------------------------------------------------------------------------------

def activation_tensors(model) -> List[str]:
    """Names of all float32 activation tensors (graph inputs and node outputs), in topological order.

    These are the tensors TensorRT needs a range for in implicit INT8 mode, and what the quantizers may use.
    """
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    initializers = {init.name for init in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    for node in model.graph.node:
        names.extend(output for output in node.output if output)
    seen = set()
    result = []
    for name in names:
        if name not in seen and types.get(name) == onnx.TensorProto.FLOAT:
            seen.add(name)
            result.append(name)
    return result


def full_range_tensors(model) -> set:
    """Tensors that keep their full observed (min-max) range whatever the method: bounded, with no outliers.

    * The network input: a normalized image, bounded by construction. Entropy clipped digits' white strokes
      at 0.81 of the max, which alone raised the INT8 logit error from 0.34 to 1.77 (measured here).
    * Attention gates (sigmoid outputs and their reshapes): bounded and narrow (ECA's sit in about
      [0.2, 0.9]). Entropy cut them to 0.2-0.6 of their max, and each gate value scales a whole channel, so
      the CPU model with quantized gates fell from 98% to 62% top-1 on digits.
    """
    initializers = {init.name for init in model.graph.initializer}
    inputs = {v.name for v in model.graph.input if v.name not in initializers}
    normalized = normalized_input(model)  # an in-graph normalization's output: the same normalized image
    return inputs | ({normalized} if normalized else set()) | gate_tensors(model)


def gate_tensors(model) -> set:
    """Sigmoid outputs and the reshapes of them: the gates of attention modules."""
    gates = set()
    for node in model.graph.node:  # nodes are in topological order, so one pass follows reshape chains
        if node.op_type in GATE_OPS or (node.op_type in SHAPE_OPS and node.input and node.input[0] in gates):
            gates.update(node.output)
    return gates


def exposing_session(model, names: Sequence[str], source: str = "the model"):
    """An ORT session on the CPU that also returns the tensors ``names``, in their own types (an FP16 model's
    are float16); optimizations are off, so no tensor is fused away. Calibration statistics and the per-layer
    report both read intermediate tensors through it."""
    import onnx
    import onnxruntime as ort
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(exposed)
        types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info)
                 + list(inferred.graph.output)}
    except Exception:  # shape inference is only a hint for the types; float32 is the common case
        types = {}
    outputs = {output.name for output in exposed.graph.output}
    for name in names:
        if name not in outputs:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(
                name, types.get(name) or onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    from deploy.runners.onnxruntime import create_session  # ORT's own errors as one line naming ``source``
    return create_session(exposed.SerializeToString(), options, name=source)


def fixed_batch_of(model) -> Optional[int]:
    """The batch an ONNX model's image input is fixed to, or None when it is dynamic."""
    from deploy.runners.execution import fixed_batch_from_shape  # the one "fixed batch?" rule
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return fixed_batch_from_shape((dim.dim_value if dim.HasField("dim_value") else None,))


def collect_statistics(model, images: np.ndarray, progress: bool = True,
                       source: str = "the model") -> Tuple["OrderedDict[str, TensorStats]", int]:
    """Run ``images`` (N, 3, S, S) through ``model`` and gather the statistics of every activation.

    Returns (statistics by tensor, number of images used). A model with a fixed batch size B uses the first
    N - N % B images, since it cannot run a partial batch.
    """
    from deploy.progress import progress_bar
    names = activation_tensors(model)
    input_name = model.graph.input[0].name
    from deploy.runners.onnxruntime import run_session
    session = exposing_session(model, names, source)
    stats = OrderedDict((name, TensorStats()) for name in names)
    fixed = fixed_batch_of(model)
    count = len(images) - len(images) % fixed if fixed else len(images)
    if count == 0:
        raise UserError("the model has a fixed batch of {} but only {} calibration images were given".format(
            fixed, len(images)))
    # The first image measures the activations' size, which sets a batch that fits the memory budget.
    size = fixed or 1
    bar = progress_bar(count, desc="calibrating", enabled=progress)
    with bar:
        done = 0
        while done < count:
            batch = images[done:done + size]
            outputs = run_session(session, names, {input_name: batch}, source)
            for name, value in zip(names, outputs):
                try:
                    stats[name].update(value)
                except ValueError:
                    raise UserError("tensor {} holds NaN or infinite values on the calibration images; the FP32 "
                                    "model itself is broken".format(name)) from None
            if done == 0 and not fixed:
                per_image = sum(value.nbytes for value in outputs) / max(len(batch), 1)
                size = int(max(1, min(64, ACTIVATION_BUDGET_BYTES // max(per_image, 1))))
            done += len(batch)
            bar.update(len(batch))
    return stats, count


def compute_ranges(model, images: np.ndarray, method: str = DEFAULT_METHOD, percentile: float = DEFAULT_PERCENTILE,
                   seed: int = 0, progress: bool = True) -> CalibrationRanges:
    """Calibrate ``model`` (an onnx.ModelProto) on preprocessed ``images`` with ``method``."""
    check_method(method, percentile)
    if len(images) == 0:
        raise UserError("no calibration images")
    stats, used = collect_statistics(model, np.ascontiguousarray(images, dtype=np.float32), progress)
    return ranges_from_statistics(model, stats, used, method, percentile, seed)


def check_method(method: str, percentile: float = DEFAULT_PERCENTILE) -> None:
    if method not in METHODS:
        raise UserError("unknown calibration method {!r}; choose one of {}".format(method, ", ".join(METHODS)))
    if not 0.0 < percentile <= 100.0:
        raise UserError("percentile must be in (0, 100], got {}".format(percentile))


def ranges_from_statistics(model, stats: "OrderedDict[str, TensorStats]", used: int, method: str,
                           percentile: float = DEFAULT_PERCENTILE, seed: int = 0) -> CalibrationRanges:
    """The ranges ``method`` picks from statistics gathered once by collect_statistics (no model run)."""
    check_method(method, percentile)
    full_range = full_range_tensors(model)
    tensors = OrderedDict()
    for name, stat in stats.items():
        amax = compute_amax(stat, "minmax" if name in full_range else method, percentile)
        seen = stat.max >= stat.min  # an always-empty tensor has no values: record a zero range
        tensors[name] = TensorRange(amax=amax, min=stat.min if seen else 0.0, max=stat.max if seen else 0.0)
    return CalibrationRanges(method=method, num_images=used, seed=seed,
                             percentile=percentile if method == "percentile" else None, tensors=tensors)
