"""Export forms of the attention blocks (ECA, SE, CBAM): graph passes on the exported ONNX model.

The PyTorch forward and the numbers stay the same; only how the gate ``x * s`` is spelled in ONNX changes.

``lean`` (what the tracer writes): ``Mul(x, s)`` with ``s`` of shape (N, C, 1, 1) (channel gate) or (N, 1, H, W)
(CBAM's spatial gate), broadcast by the Mul. TensorRT fuses these pointwise ops itself, and ONNX Runtime's INT8
path turns them into QLinearMul / QLinearAdd in NHWC, so this is the form for TensorRT and for every Q/DQ model.

``nchwc`` (ONNX Runtime FP32 on x86; ``export --attention-form nchwc``): ORT keeps ResNet's convolutions in its blocked
NCHWc layout and fuses each residual Add and ReLU into a convolution. Its NchwcTransformer
(onnxruntime/core/optimizer/nchwc_transformer.cc) keeps a Mul in NCHWc only when both inputs are NCHWc
tensors whose shapes it can prove equal; a broadcast by an (N, C, 1, 1) vector is left in NCHW. Every gated block
then pays a reorder of the feature map to NCHW and back, and its Add and ReLU run as separate passes. This pass
rewrites each gate so the transformer keeps it blocked:

* the gate is broadcast to the full shape by depthwise convolutions whose weights are ones and whose padding is
  kernel - 1, so every output window holds exactly one real input: (N,C,1,1) -> kernel (1,W) -> (N,C,1,W) ->
  kernel (H,1) -> (N,C,H,W). The width step comes first: MLAS skips kernel rows that fall in the padding but
  visits padded columns, so the step with the long padded row runs on a 1-row tensor (the other order, or one
  (H,W) kernel, measured several times slower). A spatial gate (N,1,H,W) is
  broadcast over channels by a 1x1 conv (1 -> C) of ones. Both are exact (one product by 1.0 per output).
  Resize (nearest) would broadcast too, but ONNX shape inference drops a symbolic batch dimension through it,
  so ORT could not prove the shapes equal for a dynamic-batch model.
* Reshapes in the gate branch write 0 (copy the batch dimension) instead of -1, for the same reason: shape
  inference must carry the symbolic batch to the Mul.
* a residual Add + ReLU whose inputs are not a single-use convolution (identity shortcut) gets a depthwise 1x1
  conv of ones in front of its gated input; ORT then fuses the Add and the ReLU into that conv, one pass instead
  of two. (With a projection shortcut ORT fuses them into the shortcut conv already.)

Measured here (ORT 1.32, 2 threads, 224x224, benchmark/bench_attention_cost.py --profile): the kernel time
ECA-ResNet-50 spends beyond ResNet-50 went from 15.6 % to 9.6 % at batch 8 and from 9.4 % to 8.4 % at batch 1.
What remains is the Mul (reads two full tensors), the broadcast and residual convs and the pool; a broadcasting
Mul inside the blocked layout would need a kernel ORT does not have. The pass needs ORT_ENABLE_ALL (the NCHWc
transformer is a layout optimization); with ORT_ENABLE_EXTENDED, on ARM (no NCHWc kernels in ORT), in TensorRT
and in ORT's INT8 (NHWC) path the inserted convolutions are plain extra work (INT8 ran 45 % slower), hence
``lean`` there. ``to_lean`` undoes the pass exactly (every inserted node is an identity-valued conv of ones), so
later stages (INT8 calibration, FP16, TensorRT) can start from the lean graph whatever form a file is in.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from deploy.errors import UserError

from .attention_form_options import DEFAULT_FORM, FORMS  # noqa: F401  (declared once, re-exported here)
from .onnx_graph import GraphIndex
METADATA_KEY = "attention_form"

MARKER = "nchwc_"  # last name segment of every node this pass inserts; to_lean removes exactly those
# ORT's NCHWc block is 16 channels with AVX-512 and 8 with AVX2; a channel count that is not a multiple
# cannot stay blocked, so such gates are left lean.
CHANNEL_MULTIPLE = 16


@dataclass
class FormReport:
    form: str
    channel_gates: int = 0
    spatial_gates: int = 0
    residual_adds: int = 0
    skipped: List[str] = field(default_factory=list)  # gates left lean, with the reason
    eca_gates: Optional[int] = None  # of a model from elsewhere: ECA gates found by their computation (exporter.gates)

    def to_dict(self) -> Dict[str, object]:
        payload = {"form": self.form, "channel_gates": self.channel_gates, "spatial_gates": self.spatial_gates,
                   "residual_adds": self.residual_adds, "skipped": list(self.skipped)}
        if self.eca_gates is not None:
            payload["eca_gates"] = self.eca_gates
        return payload


def check_form(form: str) -> str:
    if form not in FORMS:
        raise UserError("unknown attention form {!r}; choose one of {}".format(form, ", ".join(FORMS)))
    return form


def convert(model: onnx.ModelProto, form: str) -> FormReport:
    """Rewrite ``model`` in place into ``form`` (from either form) and record it in the metadata."""
    check_form(form)
    to_lean(model)
    report = apply_nchwc(model) if form == "nchwc" else FormReport("lean")
    _set_form_metadata(model, form)
    return report


def model_form(model: onnx.ModelProto) -> str:
    """The form the graph is in, read from its nodes (metadata can be stale after hand edits)."""
    return "nchwc" if any(_is_inserted(node) for node in model.graph.node) else "lean"


# -- the nchwc pass ------------------------------------------------------------------------------------------

def apply_nchwc(model: onnx.ModelProto) -> FormReport:
    """Rewrite every attention gate of a lean ``model`` (in place) into the NCHWc-friendly form."""
    report = FormReport("nchwc")
    shapes = _static_shapes(model)
    graph = GraphIndex(model)
    gated = {}  # Mul name -> (node, "channel" or "spatial")
    for mul in [n for n in model.graph.node if n.op_type == "Mul"]:
        gate = _classify_gate(mul, shapes, graph)
        if gate is None:
            continue
        kind, x_index, reason = gate
        if reason:
            report.skipped.append("{}: {}".format(mul.name, reason))
            continue
        x, s = mul.input[x_index], mul.input[1 - x_index]
        _copy_batch_in_reshapes(model, graph, s, x, shapes)
        channels, height, width = shapes[x][1:]
        if kind == "channel":
            full = _broadcast_spatial(model, mul, s, channels, height, width)
        else:
            full = _broadcast_channels(model, mul, s, channels)
        mul.input[1 - x_index] = full
        gated[mul.name] = (mul, kind)
    _topological_sort(model)
    for mul in _unproven_shapes(model, [mul for mul, _ in gated.values()]):
        # ORT would then keep this Mul in NCHW next to blocked inputs: slower than the lean form.
        _bypass(model, [n for n in model.graph.node if _is_inserted(n) and n.name.startswith(mul.name + "/")])
        report.skipped.append("{}: shape inference does not carry the batch dimension to the gate".format(mul.name))
        del gated[mul.name]
    report.channel_gates = sum(kind == "channel" for _, kind in gated.values())
    report.spatial_gates = len(gated) - report.channel_gates
    graph = GraphIndex(model)
    shapes = _static_shapes(model)
    for mul, _ in gated.values():
        report.residual_adds += _fuse_residual(model, graph, mul.output[0], shapes)
    _topological_sort(model)
    _drop_unused_initializers(model)
    _refresh_value_info(model)
    return report


def _unproven_shapes(model, muls) -> List[onnx.NodeProto]:
    """The gated Muls whose two inputs shape inference cannot show equal (symbolic batch included)."""
    shapes = _static_shapes(model)
    return [mul for mul in muls if shapes.get(mul.input[0]) is None
            or shapes.get(mul.input[0]) != shapes.get(mul.input[1]) or None in shapes[mul.input[0]]]


def _classify_gate(mul, shapes, graph):
    """(kind, index of the feature map, reason to skip or None) for a gating Mul, else None."""
    if len(mul.input) != 2 or any(graph.is_constant(name) for name in mul.input):
        return None
    a, b = (shapes.get(name) for name in mul.input)
    if a is None or b is None or len(a) != 4 or len(b) != 4:
        return None
    for x_index, (x, s) in enumerate(((a, b), (b, a))):
        if x[2:] == [1, 1]:
            continue
        if s[1:] == [x[1], 1, 1]:
            kind = "channel"
        elif s[1:] == [1] + x[2:]:
            kind = "spatial"
        else:
            continue
        if not all(isinstance(d, int) for d in x[1:]):
            return kind, x_index, "channels or spatial size not static"
        if x[1] % CHANNEL_MULTIPLE:
            return kind, x_index, "{} channels, not a multiple of {}".format(x[1], CHANNEL_MULTIPLE)
        return kind, x_index, None
    return None


def _broadcast_spatial(model, mul, s: str, channels: int, height: int, width: int) -> str:
    """(N,C,1,1) -> (N,C,H,W) by depthwise convs of ones: width first (see the module docstring)."""
    current = s
    if width > 1:
        current = _ones_conv(model, mul.name + "/" + MARKER + "broadcast_w", current, (channels, 1, 1, width),
                             group=channels, pads=(0, width - 1, 0, width - 1))
    if height > 1:
        current = _ones_conv(model, mul.name + "/" + MARKER + "broadcast_h", current, (channels, 1, height, 1),
                             group=channels, pads=(height - 1, 0, height - 1, 0))
    return current


def _broadcast_channels(model, mul, s: str, channels: int) -> str:
    """(N,1,H,W) -> (N,C,H,W) by a 1x1 conv from 1 to C channels, weights one."""
    return _ones_conv(model, mul.name + "/" + MARKER + "broadcast_c", s, (channels, 1, 1, 1), group=1,
                      pads=(0, 0, 0, 0))


def _fuse_residual(model, graph, gated: str, shapes) -> int:
    """Put a depthwise 1x1 identity conv between a gated tensor and the Add + ReLU it feeds, when ORT could
    not otherwise fuse that Add: i.e. when its other input is not a convolution read by the Add alone."""
    consumers = graph.consumers.get(gated, [])
    if len(consumers) != 1 or consumers[0].op_type != "Add":
        return 0
    add = consumers[0]
    after = graph.consumers.get(add.output[0], [])
    if len(after) != 1 or after[0].op_type != "Relu":
        return 0
    other = add.input[1] if add.input[0] == gated else add.input[0]
    producer = graph.producer.get(other)
    if producer is not None and producer.op_type == "Conv" and len(graph.consumers.get(other, [])) == 1:
        return 0
    channels = shapes[gated][1]
    out = _ones_conv(model, add.name + "/" + MARKER + "residual", gated, (channels, 1, 1, 1), group=channels,
                     pads=(0, 0, 0, 0))
    add.input[list(add.input).index(gated)] = out
    return 1


def _ones_conv(model, name: str, source: str, weight_shape: Sequence[int], group: int, pads: Sequence[int]) -> str:
    # One initializer per shape, shared by the blocks of a stage (ORT also reorders it once).
    weight = MARKER + "ones_" + "x".join(str(d) for d in weight_shape)
    if not any(init.name == weight for init in model.graph.initializer):
        model.graph.initializer.append(numpy_helper.from_array(np.ones(weight_shape, np.float32), weight))
    output = name + "_output_0"
    model.graph.node.append(helper.make_node(
        "Conv", [source, weight], [output], name=name, group=group, kernel_shape=list(weight_shape[2:]),
        pads=list(pads)))
    return output


def _copy_batch_in_reshapes(model, graph, gate: str, feature_map: str, shapes) -> None:
    """Reshapes between ``feature_map`` and ``gate`` with shape (-1, ...) -> (0, ...): the same result, but
    shape inference keeps the symbolic batch dimension instead of inventing a new one."""
    for node in _branch(graph, gate, feature_map):
        if node.op_type != "Reshape":
            continue
        target = graph.constant(node.input[1])
        source = shapes.get(node.input[0])
        if target is None or source is None or target.size < 1 or target[0] != -1 or not all(
                isinstance(d, int) for d in source[1:]) or np.any(target[1:] <= 0):
            continue
        if int(np.prod(source[1:])) != int(np.prod(target[1:])):
            continue  # -1 would not resolve to the batch dimension
        fixed = target.copy()
        fixed[0] = 0
        name = MARKER + "shape_" + "x".join(str(d) for d in fixed)
        if name not in graph.initializers:
            graph.initializers[name] = numpy_helper.from_array(fixed.astype(np.int64), name)
            model.graph.initializer.append(graph.initializers[name])
        node.input[1] = name
        # allowzero=1 (dynamo's exporter writes it) would read the 0 as a literal zero; the target has no other
        # zero (checked above), so the default copy-the-dimension meaning is the one wanted
        for attribute in [a for a in node.attribute if a.name == "allowzero"]:
            node.attribute.remove(attribute)


def _branch(graph, gate: str, feature_map: str) -> List[onnx.NodeProto]:
    """Nodes upstream of ``gate`` up to (not including) the producer of ``feature_map``."""
    seen, stack, nodes = set(), [gate], []
    while stack:
        name = stack.pop()
        node = graph.producer.get(name)
        if name == feature_map or node is None or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        stack.extend(i for i in node.input if i and not graph.is_constant(i))
    return nodes


# -- back to lean --------------------------------------------------------------------------------------------

def to_lean(model: onnx.ModelProto) -> int:
    """Remove the nodes ``apply_nchwc`` inserted (in place); returns how many. A lean model is left as is."""
    inserted = [node for node in model.graph.node if _is_inserted(node)]
    if not inserted:
        return 0
    _bypass(model, inserted)
    _drop_unused_initializers(model)
    _set_form_metadata(model, "lean")
    return len(inserted)


def _bypass(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto]) -> None:
    """Remove inserted convs of ones, feeding their readers from their input (a broadcast the Mul or Add does
    itself, or the identity)."""
    rename = {node.output[0]: node.input[0] for node in nodes}
    for node in nodes:
        model.graph.node.remove(node)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    kept_info = [info for info in model.graph.value_info if info.name not in rename]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept_info)


def _is_inserted(node: onnx.NodeProto) -> bool:
    return node.op_type == "Conv" and node.name.rsplit("/", 1)[-1].startswith(MARKER)


# -- helpers -------------------------------------------------------------------------------------------------

def _static_shapes(model: onnx.ModelProto) -> Dict[str, list]:
    """Tensor name -> dims (int, or the dim_param string, or None) from ONNX shape inference."""
    inferred = _infer_fresh(model)
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if not info.type.tensor_type.HasField("shape"):
            continue
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                             for d in info.type.tensor_type.shape.dim]
    return shapes


def _infer_fresh(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference that ignores the model's stored value_info: onnxsim stores a made-up dim_param for each
    batch dimension that went through a Reshape(-1, ...), and inference would keep it over 'batch'."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    return shape_inference.infer_shapes(bare)


def _refresh_value_info(model: onnx.ModelProto) -> None:
    inferred = _infer_fresh(model)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)


def _topological_sort(model: onnx.ModelProto) -> None:
    """ONNX requires nodes in topological order; the inserted convs were appended at the end."""
    available = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise RuntimeError("attention form pass left a cycle in the graph")  # a bug here, not user input
        pending = remaining
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """The -1 shapes the pass replaced, or the ones of removed convs (ORT warns about unused initializers)."""
    used = {name for node in model.graph.node for name in node.input}
    used.update(output.name for output in model.graph.output)
    kept = [init for init in model.graph.initializer if init.name in used]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)


def _set_form_metadata(model: onnx.ModelProto, form: str) -> None:
    props = {prop.key: prop.value for prop in model.metadata_props}
    if not props and form == "lean":
        return  # a bare graph (tests, scratch) stays bare
    props[METADATA_KEY] = form
    del model.metadata_props[:]
    for key in sorted(props):
        model.metadata_props.add(key=key, value=props[key])
