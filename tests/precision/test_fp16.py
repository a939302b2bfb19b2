"""FP16 conversion: strongly typed FP16 with float32 I/O, metadata carried over, top-1 kept on held-out digits."""
import os
import shutil

import numpy as np
import onnx
import pytest

from data.datasets import load_dataset
from precision.fp16 import convert_to_fp16, convert_to_fp16_file
from deploy.errors import UserError
from deploy.metadata import read_model_info


def _session(path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _logits(path, x):
    session = _session(path)
    return np.concatenate([session.run(None, {"input": x[i:i + 128]})[0] for i in range(0, len(x), 128)])


def test_fp16_model_beside_fp32_agrees_on_held_out_digits(digits_eca_onnx, digits_split, tmp_path):
    fp32 = str(tmp_path / "eca_digits.onnx")
    shutil.copy(digits_eca_onnx, fp32)
    result = convert_to_fp16_file(fp32)
    assert result.to_dict()["path"] == str(tmp_path / "eca_digits.fp16.onnx") and os.path.isfile(result.path)

    model = onnx.load(result.path)
    io = list(model.graph.input) + list(model.graph.output)
    assert [v.type.tensor_type.elem_type for v in io] == [onnx.TensorProto.FLOAT] * 2  # float32 I/O
    weights = [init for init in model.graph.initializer if len(init.dims) == 4]
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)
    assert os.path.getsize(result.path) < 0.6 * os.path.getsize(fp32)

    info, source = read_model_info(result.path), read_model_info(fp32)
    assert info.precision == "fp16" and source.precision == "fp32"
    assert (info.arch, info.num_classes, info.preprocess) == (source.arch, source.num_classes, source.preprocess)

    val = load_dataset(digits_split[1], info.preprocess, num_images=100000, cache_dir=str(tmp_path / "c"),
                       progress=False)
    reference, half = _logits(fp32, val.array), _logits(result.path, val.array)
    assert half.dtype == np.float32
    assert np.mean(reference.argmax(1) == half.argmax(1)) >= 0.995
    assert np.abs(reference - half).max() < 0.05 * np.ptp(reference)


def test_softmax_stays_float32(tmp_path):
    # A classifier that ends in Softmax: the exp and the sum over classes stay FP32.
    helper = onnx.helper
    weight = onnx.numpy_helper.from_array(np.random.RandomState(0).randn(8, 4).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"], name="fc"),
         helper.make_node("Softmax", ["z"], ["p"], name="softmax", axis=1)],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, ["n", 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converted = onnx.shape_inference.infer_shapes(convert_to_fp16(model))
    values = list(converted.graph.value_info) + list(converted.graph.output)
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    softmax = next(n for n in converted.graph.node if n.op_type == "Softmax")
    matmul = next(n for n in converted.graph.node if n.op_type == "MatMul")
    assert types[softmax.input[0]] == types[softmax.output[0]] == onnx.TensorProto.FLOAT
    assert types[matmul.output[0]] == onnx.TensorProto.FLOAT16
    x = np.random.RandomState(1).randn(3, 8).astype(np.float32)
    path = str(tmp_path / "softmax.fp16.onnx")
    onnx.save(converted, path)
    assert np.allclose(_session(path).run(None, {"x": x})[0].sum(axis=1), 1.0, atol=1e-6)


def test_only_fp32_models_are_converted(digits_eca_onnx, tmp_path):
    fp16 = convert_to_fp16_file(digits_eca_onnx, str(tmp_path / "once.fp16.onnx")).path
    with pytest.raises(UserError, match="already fp16"):
        convert_to_fp16_file(fp16, str(tmp_path / "twice.onnx"))
    with pytest.raises(UserError, match="no such model"):
        convert_to_fp16_file(str(tmp_path / "absent.onnx"))
