"""ECA gates found in any ONNX graph, by their shape of computation rather than by module names.

A model from elsewhere (a timm program, an ONNX file) names nothing the zoo names, so its ECA modules are found
as the paper defines them: a global average pool of the feature map, a 1-D convolution across channels, a
sigmoid, and a multiply of the feature map by the result. Reshapes, squeezes, transposes and an Expand may sit
between them (timm's ``EcaModule`` ends in ``x * y.expand_as(x)``).

``drop_gate_expands`` removes that Expand: the Mul broadcasts an (N, C, 1, 1) gate itself, so the result is the
same to the bit, and the graph is then in the lean form every later pass expects (exporter.attention_forms).
"""
from typing import List, Optional

import onnx

from .onnx_graph import GraphIndex

# Ops that only move or view values: the walk between the parts of a gate passes through them.
_VIEW_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Identity", "Expand"}
_POOL_OPS = {"GlobalAveragePool", "ReduceMean"}


def _walk_up(graph: GraphIndex, name: str) -> Optional[onnx.NodeProto]:
    """The first producer above ``name`` that is not a view op."""
    node = graph.producer.get(name)
    while node is not None and node.op_type in _VIEW_OPS:
        node = graph.producer.get(node.input[0])
    return node


def _is_eca_gate(graph: GraphIndex, mul: onnx.NodeProto) -> bool:
    """Whether one input of ``mul`` is sigmoid(conv(pool(the other input))), through view ops."""
    if mul.op_type != "Mul" or len(mul.input) != 2:
        return False
    for gate, feature in ((mul.input[1], mul.input[0]), (mul.input[0], mul.input[1])):
        sigmoid = _walk_up(graph, gate)
        if sigmoid is None or sigmoid.op_type != "Sigmoid":
            continue
        conv = _walk_up(graph, sigmoid.input[0])
        if conv is None or conv.op_type != "Conv" or not graph.is_constant(conv.input[1]):
            continue
        weight = graph.constant(conv.input[1])
        if weight is None or weight.shape[0] != 1 or weight.shape[1] != 1:  # one channel in and out: across channels
            continue
        pool = _walk_up(graph, conv.input[0])
        if pool is not None and pool.op_type in _POOL_OPS and pool.input[0] == feature:
            return True
    return False


def find_eca_gates(model: onnx.ModelProto) -> List[str]:
    """Names of the Mul nodes that apply an ECA gate, in graph order."""
    graph = GraphIndex(model)
    return [node.name or node.output[0] for node in graph.nodes if _is_eca_gate(graph, node)]


def drop_gate_expands(model: onnx.ModelProto) -> int:
    """Feed each ECA gate's Mul the (N, C, 1, 1) gate instead of its Expand to the full shape (in place); returns
    how many. Nodes left without readers (the Expand and its Shape) are removed."""
    from .attention_forms import _static_shapes  # shape inference, shared with the form passes

    graph = GraphIndex(model)
    shapes = None
    changed = 0
    for node in graph.nodes:
        if not _is_eca_gate(graph, node):
            continue
        for index, name in enumerate(node.input):
            producer = graph.producer.get(name)
            above = _walk_up(graph, name)
            if producer is None or producer.op_type != "Expand" or above is None or above.op_type != "Sigmoid":
                continue
            shapes = shapes if shapes is not None else _static_shapes(model)
            if _expands_to(graph, producer.input[1], node.input[1 - index], shapes):
                node.input[index] = producer.input[0]
                changed += 1
    if changed:
        _drop_dead_nodes(model)
    return changed


def _expands_to(graph: GraphIndex, target: str, feature: str, shapes) -> bool:
    """Whether the Expand target ``target`` is the feature map's own shape: then broadcast(x, broadcast(s, target))
    is broadcast(x, s), and the Mul gives the same tensor to the bit without the Expand. Two spellings: Shape(x)
    (TorchScript's exporter), or Concat(the batch as Shape(input)[0:1], the constant C, H, W of x) (dynamo's)."""
    producer = graph.producer.get(target)
    if producer is None:
        return False
    if producer.op_type == "Shape":
        return producer.input[0] == feature and not producer.attribute
    if producer.op_type != "Concat" or len(producer.input) != 4:
        return False
    batch = graph.producer.get(producer.input[0])
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in batch.attribute} if batch is not None else {}
    if batch is None or batch.op_type != "Shape" or attributes != {"start": 0, "end": 1}:
        return False
    dims = [graph.constant(name) for name in producer.input[1:]]
    shape = shapes.get(feature)
    if shape is None or len(shape) != 4 or any(d is None or d.size != 1 for d in dims):
        return False
    return [int(d.reshape(-1)[0]) for d in dims] == list(shape[1:])


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    outputs = {output.name for output in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | outputs
        dead = [node for node in model.graph.node if not any(name in read for name in node.output)]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)
