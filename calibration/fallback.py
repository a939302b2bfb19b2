"""Float fallback: when the Q/DQ model misses an accuracy goal on the held-out images, take the Q/DQ off the
inputs of the layers that hurt most, one at a time, until the goal is met or the float budget is spent.

Sensitivity is the effect of leaving each layer alone in float: how much the held-out mean KL divergence from
FP32 drops. That is chosen over the per-layer SQNR of compare-layers, which accumulates the error of every
layer upstream (the last layers always look worst) and so ranks where error shows, not where it starts.
It costs one held-out run per quantized layer, on the few images of the held-out split.
"""
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from deploy.errors import UserError

from .layer_report import quantized_layers
from .selection import HeldOut, Score

FLOAT_LAYER_SHARE = 0.1  # default --max-float-layers: about this share of the quantized layers


@dataclass(frozen=True)
class AccuracyGoal:
    """What the held-out images must show: top-1 agreement with FP32 (%) and/or top-1 loss (points)."""

    min_agreement: Optional[float] = None
    max_top1_drop: Optional[float] = None

    def __bool__(self) -> bool:
        return self.min_agreement is not None or self.max_top1_drop is not None

    def met(self, score: Score) -> bool:
        if self.min_agreement is not None and score.agreement < self.min_agreement - 1e-9:
            return False
        if self.max_top1_drop is not None and score.top1_drop > self.max_top1_drop + 1e-9:
            return False
        return True

    def check_labels(self, has_labels: bool) -> None:
        if self.max_top1_drop is not None and not has_labels:
            raise UserError("--max-top1-drop needs labeled images (an ImageFolder tree or --labels)")

    def describe(self) -> str:
        parts = []
        if self.min_agreement is not None:
            parts.append("agreement >= {:g}%".format(self.min_agreement))
        if self.max_top1_drop is not None:
            parts.append("top-1 drop <= {:g} pt".format(self.max_top1_drop))
        return " and ".join(parts)


@dataclass
class FallbackResult:
    model: object                                  # onnx.ModelProto, the best one reached
    float_layers: List[str]                        # of that model, in the order they were taken off
    score: Score
    met: bool
    tried: int                                     # the most float layers tried
    sensitivity: List[Tuple[str, float]] = field(default_factory=list)  # (layer, KL gain when float), best first


def default_max_float_layers(num_quantized: int) -> int:
    return max(1, int(round(num_quantized * FLOAT_LAYER_SHARE)))


def float_layers(quantized, fp32, names) -> object:
    """A copy of ``quantized`` in which the layers ``names`` read float inputs: the activation from in front of
    its Q/DQ pair (clipped where the Q stands in for a folded ReLU, see _unfolded_input), weights and bias as
    the FP32 model has them. Q/DQ nodes nobody reads any more are dropped."""
    import onnx
    from exporter.onnx_graph import GraphIndex
    model = copy.deepcopy(quantized)
    fp32_nodes = {node.name: node for node in fp32.graph.node}
    fp32_inits = {init.name: init for init in fp32.graph.initializer}
    graph = GraphIndex(model)   # a snapshot of the copy as quantized: the lookups below need nothing added
    producers, initializers = graph.producer, graph.initializers
    taken = set(initializers) | set(producers) | {value.name for value in model.graph.input}
    float_names: Dict[str, str] = {}  # FP32 initializer -> its name here (ORT's weight DQ outputs reuse the name)
    clipped: Dict[str, object] = {}   # tensor in front of a Q -> the Clip that restores a folded ReLU
    wanted = set(names)
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        original = fp32_nodes.get(node.name)
        if original is None or original.op_type != node.op_type or len(original.input) != len(node.input):
            raise ValueError("layer {} has no FP32 counterpart of the same name".format(node.name))
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = original.input[index]
            if source in fp32_inits:                     # a weight or bias: the FP32 values
                if source not in float_names:
                    if source in initializers:           # the TensorRT target keeps FP32 weights in front of Q
                        float_names[source] = source
                    else:
                        init = copy.deepcopy(fp32_inits[source])
                        init.name = _unique_name(source, "_float", taken)
                        model.graph.initializer.append(init)
                        float_names[source] = init.name
                node.input[index] = float_names[source]
            else:                                        # an activation: the float tensor the Q read
                q = producers.get(dq.input[0])
                if q is None or q.op_type != "QuantizeLinear":
                    node.input[index] = source
                else:
                    node.input[index] = _unfolded_input(model, graph, q, clipped, taken)
    _insert_after_producers(model, list(clipped.values()))
    _prune(model)
    onnx.checker.check_model(model)
    return model


def _unique_name(name: str, suffix: str, taken: set) -> str:
    """``name`` (with ``suffix`` added until no tensor has it), now taken."""
    while name in taken:
        name += suffix
    taken.add(name)
    return name


def _unfolded_input(model, graph, q, clipped: Dict[str, object], taken: set) -> str:
    """The float tensor a layer reads in place of the DQ(Q(x)) in front of it.

    ONNX Runtime's quantizer folds a Relu or Clip (ReLU6) into the Q after a Conv when the quantized range
    starts at 0 (the uint8 activations of the CPU target): the Q's saturation does the clipping, and the
    tensor in front of the Q is the raw Conv output. Read as is, a float layer there got negative inputs the
    network never had (floating one depthwise conv of the digits ECA-MobileNetV2 dropped agreement to 61%).
    So when the Q's range starts at 0, the float layer reads x clipped to that range, as the INT8 model saw
    it, without the rounding. A range that holds negatives had nothing folded: x is read unclipped.
    """
    from onnx import helper, numpy_helper
    source = q.input[0]
    scale = graph.constant(q.input[1])
    # Without a zero point, QuantizeLinear is uint8 with zero point 0 (the ONNX default).
    zero = graph.constant(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), dtype=np.uint8)
    if scale is None or zero is None or zero.size != 1 or not np.issubdtype(zero.dtype, np.integer):
        return source
    info = np.iinfo(zero.dtype)
    zero_point = int(zero.reshape(-1)[0])
    if zero_point != info.min:      # the range reaches below 0: no activation was folded into this Q
        return source
    if source not in clipped:
        name = _unique_name(source + "_float_input", "_", taken)
        bounds = [_unique_name(name + "_min", "_", taken), _unique_name(name + "_max", "_", taken)]
        top = (info.max - zero_point) * float(scale.reshape(-1)[0])
        for bound, value in zip(bounds, (0.0, top)):
            model.graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), bound))
        clipped[source] = helper.make_node("Clip", [source] + bounds, [name], name=name + "_Clip")
    return clipped[source].output[0]


def _insert_after_producers(model, nodes: List[object]) -> None:
    """Put each of ``nodes`` right after the node that makes its first input (first, for a graph input), so
    the graph stays in topological order."""
    after: Dict[str, List[object]] = {}
    for node in nodes:
        after.setdefault(node.input[0], []).append(node)
    produced = {output for node in model.graph.node for output in node.output}
    ordered = [node for source in after if source not in produced for node in after[source]]
    for node in model.graph.node:
        ordered.append(node)
        for output in node.output:
            ordered.extend(after.get(output, []))
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _prune(model) -> None:
    """Drop Q/DQ nodes whose outputs nobody reads, and initializers no node reads."""
    outputs = {value.name for value in model.graph.output}
    changed = True
    while changed:
        used = {name for node in model.graph.node for name in node.input} | outputs
        dead = [node for node in model.graph.node
                if node.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in node.output)]
        for node in dead:
            model.graph.node.remove(node)
        changed = bool(dead)
    used = {name for node in model.graph.node for name in node.input}
    for init in [init for init in model.graph.initializer if init.name not in used]:
        model.graph.initializer.remove(init)


def rank_sensitivity(quantized, fp32, heldout: HeldOut, base: Score) -> List[Tuple[str, float]]:
    """(layer, mean-KL gain when that layer alone is float), most sensitive first; ties keep network order."""
    gains = []
    for position, name in enumerate(quantized_layers(quantized)):
        try:
            candidate = float_layers(quantized, fp32, [name])
        except ValueError:
            continue
        score = heldout.score(candidate)
        gains.append((position, name, base.kl - score.kl, score.agreement - base.agreement))
    gains.sort(key=lambda item: (-round(item[3], 9), -item[2], item[0]))
    return [(name, gain) for _, name, gain, _ in gains]


def fall_back(quantized, fp32, heldout: HeldOut, goal: AccuracyGoal, base: Score,
              max_layers: Optional[int] = None) -> FallbackResult:
    """Greedily float the most sensitive layers until ``goal`` holds on ``heldout`` or ``max_layers`` are float."""
    if goal.met(base):
        return FallbackResult(quantized, [], base, True, 0)
    limit = default_max_float_layers(len(quantized_layers(quantized))) if max_layers is None else max_layers
    if limit <= 0:
        return FallbackResult(quantized, [], base, False, 0)
    ranking = rank_sensitivity(quantized, fp32, heldout, base)
    best = FallbackResult(quantized, [], base, False, 0, ranking)
    chosen: List[str] = []
    for name, _ in ranking[:limit]:
        chosen.append(name)
        model = float_layers(quantized, fp32, chosen)
        score = heldout.score(model)
        met = goal.met(score)
        if met or score.key() < best.score.key():
            best = FallbackResult(model, list(chosen), score, met, len(chosen), ranking)
        best.tried = len(chosen)
        if met:
            break
    return best


def sensitivity_dict(ranking: List[Tuple[str, float]], count: int = 10) -> Dict[str, float]:
    return {name: float("{:.6g}".format(gain)) for name, gain in ranking[:count]}
