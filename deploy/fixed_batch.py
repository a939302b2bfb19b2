"""Write a copy of an ONNX model with its batch axis fixed to 1, on the device, without the onnx package.

jetson-inference's ``imagenet`` builds its engine with no optimization profile, so it cannot take the bundle's
dynamic-batch models. Shipping a batch-1 copy would store every model twice; the copy differs only in the first
dimension of the graph's inputs and outputs, so it is derived here: ``python3 -m deploy.fixed_batch MODEL.onnx
OUT.onnx`` (build_engines.sh runs it). The ONNX file is a protobuf ``ModelProto``; this walks its wire format
with the standard library alone (numpy and Pillow are all a Jetson is sure to have) and rewrites only the
path ModelProto.graph (7) -> GraphProto.input (11) / output (12) -> ValueInfoProto.type (2) ->
TypeProto.tensor_type (1) -> shape (2) -> first dim: ``dim_param`` (2, the symbolic batch) becomes ``dim_value``
(1) = 1. GraphProto.value_info (13, shapes inferred for intermediate tensors, which still name the symbolic
batch) is dropped, as onnx-based tools do. Every other byte (nodes, weights, metadata) is copied as it is.
Field numbers: onnx/onnx.proto (stable since IR version 3).
"""
import argparse
import json
import os
import sys
from typing import Iterator, List, Tuple

from .errors import UserError
from .fileio import atomic_path

_GRAPH, _INPUT, _OUTPUT, _VALUE_INFO, _INITIALIZER = 7, 11, 12, 13, 5
_NAME, _TYPE, _TENSOR_TYPE, _SHAPE, _DIM, _DIM_VALUE = 1, 2, 1, 2, 1, 1
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(data: memoryview, pos: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(data: memoryview) -> Iterator[Tuple[int, int, memoryview, memoryview]]:
    """(field number, wire type, payload, the whole field's bytes) for each field of one message."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, end = _varint(data, pos)
            payload = data[pos:end]
        elif wire == _LENGTH:
            size, pos = _varint(data, pos)
            end = pos + size
            payload = data[pos:end]
        elif wire in (_FIXED64, _FIXED32):
            end = pos + (8 if wire == _FIXED64 else 4)
            payload = data[pos:end]
        else:
            raise ValueError("unsupported protobuf wire type {}".format(wire))
        if end > len(data):
            raise ValueError("truncated field {}".format(number))
        yield number, wire, payload, data[start:end]
        pos = end


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH) + _encode_varint(len(payload)) + payload


def _edit(data: memoryview, number: int, edit) -> Tuple[bytes, int]:
    """The message with ``edit(payload) -> bytes or None`` applied to each length-delimited field ``number``
    (None drops the field); and how many fields it changed."""
    parts: List[bytes] = []
    changed = 0
    for field, wire, payload, whole in _fields(data):
        if field == number and wire == _LENGTH:
            new = edit(payload)
            changed += 1
            if new is not None:
                parts.append(_field(field, new))
            continue
        parts.append(bytes(whole))
    return b"".join(parts), changed


def _fix_shape(shape: memoryview) -> bytes:
    done = []

    def first_dim(dim):
        if done:
            return bytes(dim)
        done.append(True)
        return _encode_varint(_DIM_VALUE << 3 | _VARINT) + _encode_varint(1)
    return _edit(shape, _DIM, first_dim)[0]


def _fix_value_info(value: memoryview) -> bytes:
    tensor = lambda t: _edit(t, _SHAPE, _fix_shape)[0]          # noqa: E731
    type_proto = lambda t: _edit(t, _TENSOR_TYPE, tensor)[0]    # noqa: E731
    return _edit(value, _TYPE, type_proto)[0]


def _value_name(value: memoryview) -> str:
    for field, wire, payload, _ in _fields(value):
        if field == _NAME and wire == _LENGTH:
            return bytes(payload).decode("utf-8", "replace")
    return ""


def _fix_graph(graph: memoryview) -> bytes:
    initializers = {_initializer_name(p) for f, w, p, _ in _fields(graph) if f == _INITIALIZER and w == _LENGTH}
    fix_input = lambda v: bytes(v) if _value_name(v) in initializers else _fix_value_info(v)  # noqa: E731
    graph = memoryview(_edit(graph, _INPUT, fix_input)[0])
    graph = memoryview(_edit(graph, _OUTPUT, _fix_value_info)[0])
    return _edit(graph, _VALUE_INFO, lambda v: None)[0]


def _initializer_name(tensor: memoryview) -> str:
    for field, wire, payload, _ in _fields(tensor):
        if field == 8 and wire == _LENGTH:  # TensorProto.name
            return bytes(payload).decode("utf-8", "replace")
    return ""


def fix_batch(data: bytes) -> bytes:
    """The serialized ModelProto ``data`` with the first dimension of every graph input and output set to 1."""
    model, graphs = _edit(memoryview(data), _GRAPH, lambda g: _fix_graph(g))
    if graphs != 1:
        raise ValueError("not an ONNX model: {} graphs".format(graphs))
    return model


def write_fixed_batch(source: str, target: str) -> int:
    """Write ``source`` with batch 1 to ``target`` (atomically); its size in bytes. External data stays where
    the model names it, relative to ``target``'s folder, so ``target`` goes beside ``source`` when it has any."""
    try:
        with open(source, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UserError("cannot read {}: {}".format(source, exc.strerror or exc)) from None
    try:
        fixed = fix_batch(data)
    except ValueError as exc:
        raise UserError("{} is not a readable ONNX model ({})".format(source, exc)) from None
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(fixed)
    return len(fixed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m deploy.fixed_batch", description=(
        "Copy an ONNX model with its batch axis fixed to 1 (for jetson-inference's imagenet), without onnx."))
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        size = write_fixed_batch(args.model, args.output)
    except UserError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": args.model, "output": args.output, "bytes": size}))
    else:
        print("wrote {} (batch 1, {} bytes)".format(args.output, size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
