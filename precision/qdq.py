"""Q/DQ INT8 models from one set of activation ranges, placed for TensorRT or for ONNX Runtime's CPU kernels.

ONNX Runtime's ``quantize_static`` does the work; the ranges reach it through its calibration cache (a
TensorsData JSON file), so it never calibrates again and every target sees the same numbers.

TensorRT (explicit quantization; NVIDIA's rules as in ModelOpt's ONNX PTQ):
  * int8, symmetric, zero point 0; weights per output channel (axis 0), stored as INT8 initializers feeding a
    DequantizeLinear (ORT writes them in FP32 behind a Q/DQ pair, AddQDQPairToWeight, and
    precision.qdq_weights stores the Q's result: the same numbers in a quarter of the bytes); biases stay float
    (QuantizeBias=False).
  * Q/DQ on the inputs of Conv/Gemm only, never on their outputs: TensorRT fuses Conv+bias+ReLU and picks the
    output precision from the consumer's Q/DQ. The network output stays float.
  * A residual Add gets Q/DQ on one input only, the identity. The other input (a Conv output, or the longer
    residual branch) stays float, so TensorRT can fuse the Add into that Conv's epilogue or into the pointwise
    kernel after it. ORT quantizes both inputs of an Add; the conv-side pair is then removed (the same edit as
    ModelOpt's build_non_residual_input_map / remove_partial_input_qdq).
  * The attention branch (ECA: pool -> 1-D conv over C values -> sigmoid; SE / CBAM MLPs) stays float. Its
    tensors hold C numbers per image, so int8 saves nothing there, while the gate scales every channel of the
    block, so its error would reach the whole feature map.

CPU (ONNX Runtime's QDQ -> QLinear* fusions):
  * uint8 asymmetric activations and int8 symmetric per-channel weights, int32 biases: ORT's u8s8 (VNNI)
    kernels. Measured on ECA-ResNet-50, batch 8, 2 threads (benchmark/bench_precision): 2.97x FP32; the same
    placement with int8 activations ran at 0.96x FP32 (uint8 is 3.2x faster), the TensorRT model at 0.68x.
  * Conv, Gemm, Add, Mul, MaxPool, GlobalAveragePool, Relu and Clip are quantized, so consecutive ops stay in uint8
    (the ECA scaling Mul and the attention pool included). The attention MLP / 1-D conv and the sigmoid stay
    float, as for TensorRT. Chosen by measurement: ORT's default op list (which also quantizes the attention's
    reshapes, 1-D conv and sigmoid) and Conv/Gemm alone both ran slower in the same scratch run (3.0x and 3.2x
    against 4.0x for this set, on a loaded machine).

Both targets: a model exported with ``--normalize-in-graph`` keeps its input normalization (exporter.
input_normalization) in float32. Pixels in [0, 255] would lose little in int8, but the normalized image is what
the first convolution reads, so its Q/DQ goes there, on the same tensor and range as in the plain model.
"""
import contextlib
import io
import logging
import os
import tempfile
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from deploy.errors import CheckFailedError, UserError
from exporter.input_normalization import normalization_nodes
from exporter.onnx_graph import GraphIndex
from precision.qdq_weights import store_weights_int8

# The activations that end an attention branch (ECA/SE/CBAM gates): their outputs scale the feature maps.
GATE_OPS = ("Sigmoid", "HardSigmoid")

TARGETS = ("tensorrt", "cpu")

POOLING_OPS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")
TRT_OP_TYPES = ["Conv", "Gemm", "Add"]
CPU_OP_TYPES = ["Conv", "Gemm", "Add", "Mul", "MaxPool", "GlobalAveragePool", "Relu", "Clip"]  # Clip: ReLU6


@dataclass
class QuantizedModel:
    target: str
    path: str
    activation_type: str
    quantize_nodes: int
    excluded_nodes: List[str] = field(default_factory=list)  # the attention branches (kept float, but the pool on CPU)
    residual_adds: int = 0

    def to_dict(self) -> Dict[str, object]:
        return {
            "target": self.target,
            "path": self.path,
            "activation_type": self.activation_type,
            "quantize_nodes": self.quantize_nodes,
            "attention_nodes": len(self.excluded_nodes),
            "residual_adds": self.residual_adds,
        }


# -- graph analysis ----------------------------------------------------------------------------------------

def attention_nodes(model) -> Set[str]:
    """Nodes of channel/spatial attention branches: on a path from a global pooling to a sigmoid gate.

    Forward from each pooling, the walk stops at Mul (where the gate scales the feature map); backward from
    each gate it stops at the pooling. Nodes reached both ways are the branch: for ECA the pool, reshape,
    1-D conv and sigmoid; the classifier head (pool -> flatten -> Gemm, no gate) is not part of it.
    """
    graph = GraphIndex(model)
    forward = _reach(graph, [n for n in graph.nodes if n.op_type in POOLING_OPS], graph.children,
                     stop=lambda n: n.op_type == "Mul")
    backward = _reach(graph, [n for n in graph.nodes if n.op_type in GATE_OPS], graph.parents,
                      stop=lambda n: n.op_type in POOLING_OPS)
    return forward & backward


def _reach(graph, starts, step, stop) -> Set[str]:
    """Names of ``starts`` and the nodes reachable from them by ``step``; a node where ``stop`` holds is
    included when it is a pooling (the branch's own start) and is never walked through."""
    seen = {n.name for n in starts}
    queue = deque(starts)
    while queue:
        for nxt in step(queue.popleft()):
            if nxt.name in seen:
                continue
            if stop(nxt):
                if nxt.op_type in POOLING_OPS:
                    seen.add(nxt.name)
                continue
            seen.add(nxt.name)
            queue.append(nxt)
    return seen


def residual_adds(model) -> Dict[str, int]:
    """Residual Adds -> the index of the input TensorRT fuses with (the conv side, to leave unquantized).

    An Add of two activations is residual when both inputs share an ancestor. If exactly one input is a Conv
    output, that one is the conv side (a projection shortcut's conv when the other branch ends in the ECA
    Mul); otherwise the input farther from the common ancestor is: the residual branch, not the identity.
    """
    graph = GraphIndex(model)
    attention = attention_nodes(model)  # CBAM sums its two MLP branches: an Add, but not a residual one
    result = {}
    for node in graph.nodes:
        if (node.op_type != "Add" or len(node.input) != 2 or node.name in attention
                or any(graph.is_constant(i) for i in node.input)):
            continue
        depths = [_ancestor_depths(graph, name) for name in node.input]
        common = set(depths[0]) & set(depths[1])
        if not common:
            continue
        is_conv = [graph.producer.get(name) is not None and graph.producer[name].op_type == "Conv"
                   for name in node.input]
        if is_conv[0] != is_conv[1]:
            result[node.name] = 0 if is_conv[0] else 1
            continue
        nearest = min(common, key=lambda a: (depths[0][a] + depths[1][a], a))
        result[node.name] = 0 if depths[0][nearest] >= depths[1][nearest] else 1
    return result


def _ancestor_depths(graph, tensor: str) -> Dict[str, int]:
    """Tensor names upstream of ``tensor`` (itself included, depth 0) -> their smallest distance in nodes."""
    depths = {tensor: 0}
    queue = deque([tensor])
    while queue:
        name = queue.popleft()
        node = graph.producer.get(name)
        if node is None:
            continue
        for parent in node.input:
            if parent and not graph.is_constant(parent) and parent not in depths:
                depths[parent] = depths[name] + 1
                queue.append(parent)
    return depths


# -- quantizing ---------------------------------------------------------------------------------------------

def quantize(model, ranges, target: str, output_path: str, metadata: Optional[Dict[str, str]] = None) -> QuantizedModel:
    """Write the Q/DQ INT8 model of ``model`` (onnx.ModelProto, FP32) for ``target`` to ``output_path``."""
    quantized, summary = build_quantized(model, ranges, target, metadata)
    summary.path = save_model(quantized, output_path)
    return summary


def build_quantized(model, ranges, target: str, metadata: Optional[Dict[str, str]] = None, check: bool = True):
    """(onnx.ModelProto, QuantizedModel with an empty path): the Q/DQ model (checked unless ``check`` is False,
    for candidates that are only scored), not yet written."""
    import onnx
    if target not in TARGETS:
        raise UserError("unknown quantization target {!r}; choose one of {}".format(target, ", ".join(TARGETS)))
    attention = attention_nodes(model)
    residual = residual_adds(model)
    with tempfile.TemporaryDirectory(prefix="eca-quant-") as tmp:
        source = os.path.join(tmp, "fp32.onnx")
        onnx.save(model, source)
        cache = os.path.join(tmp, "ranges.json")
        _write_ort_ranges(ranges, cache)
        quantized_path = os.path.join(tmp, "int8.onnx")
        if target == "tensorrt":
            _quantize_tensorrt(model, source, quantized_path, cache, attention, residual)
            activation = "int8"
        else:
            _quantize_cpu(model, source, quantized_path, cache, attention)
            activation = "uint8"
        quantized = onnx.load(quantized_path)
    if target == "tensorrt":
        for add_name, index in sorted(residual.items()):
            remove_input_qdq(quantized, add_name, index)
        # ORT's quantizer left each weight in FP32 behind its own Q/DQ pair; store the Q's INT8 result instead
        # (bit-identical logits, a quarter of the bytes; which TensorRT accepts it: precision/qdq_weights.py).
        store_weights_int8(quantized)
    _finish(quantized, model, metadata)
    if check:
        check_quantized(quantized, target)
    quantize_nodes = sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    return quantized, QuantizedModel(target, "", activation, quantize_nodes, sorted(attention), len(residual))


def check_quantized(quantized, target: str) -> None:
    import onnx
    try:
        onnx.checker.check_model(quantized, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise CheckFailedError("the {} INT8 model fails onnx.checker: {}".format(
            target, str(exc).splitlines()[0])) from None


def set_metadata(model, metadata: Dict[str, str]) -> None:
    """Add ``metadata`` to the model's metadata_props (sorted, so the file is the same for the same inputs)."""
    import onnx
    props = {prop.key: prop.value for prop in model.metadata_props}
    props.update(metadata)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dict(sorted(props.items())))


def save_model(model, output_path: str) -> str:
    import onnx
    from deploy.fileio import atomic_path
    with atomic_path(output_path) as tmp_path:
        onnx.save(model, tmp_path)
    return os.path.abspath(output_path)


def _write_ort_ranges(ranges, path: str) -> None:
    from onnxruntime.quantization.calibrate import save_tensors_data
    save_tensors_data(ranges.to_tensors_data(), path)


def _run_quantize_static(source: str, output: str, cache: str, **kwargs) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    # The quantizer prints and logs advice (pre-processing, ...) meant for interactive use; stdout must stay
    # clean for --json, so both are silenced here.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(source, output, calibration_data_reader=None, calibration_cache_path=cache,
                            calibrate_method=CalibrationMethod.MinMax, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=False, **kwargs)
    finally:
        logger.setLevel(level)


def _quantize_tensorrt(model, source, output, cache, attention, residual) -> None:
    from onnxruntime.quantization import QuantType
    other_adds = [n.name for n in model.graph.node if n.op_type == "Add" and n.name not in residual]
    _run_quantize_static(
        source, output, cache,
        op_types_to_quantize=TRT_OP_TYPES,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=sorted(attention) + other_adds + normalization_nodes(model),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": False,
            "OpTypesToExcludeOutputQuantization": TRT_OP_TYPES,
        },
    )


def _quantize_cpu(model, source, output, cache, attention) -> None:
    from onnxruntime.quantization import QuantType
    # The pool of the attention branch reads the (already uint8) block output, so quantizing it is free and
    # keeps ORT from dequantizing the whole feature map for it; the small ops after it stay float.
    pools = {n.name for n in model.graph.node if n.op_type in POOLING_OPS}
    _run_quantize_static(
        source, output, cache,
        op_types_to_quantize=CPU_OP_TYPES,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=sorted(attention - pools) + normalization_nodes(model),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )


def remove_input_qdq(model, node_name: str, index: int) -> bool:
    """Feed input ``index`` of ``node_name`` from the float tensor behind its Q -> DQ pair.

    The pair itself is deleted when nothing else reads it. Returns whether there was a pair to bypass.
    """
    graph = GraphIndex(model)
    node = next((n for n in graph.nodes if n.name == node_name), None)
    if node is None:
        return False
    dq = graph.producer.get(node.input[index])
    if dq is None or dq.op_type != "DequantizeLinear":
        return False
    q = graph.producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return False
    node.input[index] = q.input[0]
    if len(graph.consumers.get(dq.output[0], [])) == 1:
        model.graph.node.remove(dq)
        if len(graph.consumers.get(q.output[0], [])) == 1:
            model.graph.node.remove(q)
    return True


def _finish(quantized, original, metadata: Optional[Dict[str, str]]) -> None:
    """Carry the FP32 model's metadata (plus ``metadata``) and drop initializers no node reads any more."""
    import onnx
    used = {name for node in quantized.graph.node for name in node.input}
    unused = [init for init in quantized.graph.initializer if init.name not in used]
    for init in unused:
        quantized.graph.initializer.remove(init)
    props = {prop.key: prop.value for prop in original.metadata_props}
    props.update(metadata or {})
    onnx.helper.set_model_props(quantized, dict(sorted(props.items())))
    quantized.producer_name = original.producer_name or quantized.producer_name
    quantized.doc_string = ""
