"""The Triton model repository: every config parsed with Triton's own schema (tritonclient's model_config_pb2,
a test dependency) and compared with the ONNX graph; the files the server reads, and the build script's part."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from tests.bundling.ecosystem.bundle_files import build_lines, max_batch_of

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] (requirements-dev.txt) carries Triton's schema")
from google.protobuf import text_format  # noqa: E402  (protobuf comes with tritonclient)


def parse_config(path):
    config = model_config_pb2.ModelConfig()
    with open(path, "r", encoding="utf-8") as handle:
        text_format.Parse(handle.read(), config)  # an unknown or misspelled field is a ParseError
    return config


def _graph_io(path):
    import onnx
    model = onnx.load(path, load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return ([v for v in model.graph.input if v.name not in initializers], list(model.graph.output))


def _same_tensor(config_tensor, onnx_value, batched):
    import onnx
    from tritonclient.utils import triton_to_np_dtype
    kind = onnx_value.type.tensor_type
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in kind.shape.dim]
    assert config_tensor.name == onnx_value.name
    assert list(config_tensor.dims) == (shape[1:] if batched else shape)
    triton_type = model_config_pb2.DataType.Name(config_tensor.data_type)[len("TYPE_"):]
    assert np.dtype(triton_to_np_dtype(triton_type)) == onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type)


def test_every_config_parses_and_matches_its_model(digits_bundle):
    root = digits_bundle[0]
    build = build_lines(root)
    labels = open(os.path.join(root, "labels.txt")).read().split()
    expected = {}
    for model, words in build.items():
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", model[:-len(".onnx")])
        expected[stem + "_onnx"] = ("onnxruntime_onnx", model, words)
        expected[stem + "_trt"] = ("tensorrt_plan", model, words)
    assert sorted(os.listdir(os.path.join(root, "triton"))) == sorted(expected)
    for name, (platform, model, words) in expected.items():
        folder = os.path.join(root, "triton", name)
        config = parse_config(os.path.join(folder, "config.pbtxt"))
        assert (config.name, config.platform, config.max_batch_size) == (name, platform, max_batch_of(words))
        inputs, outputs = _graph_io(os.path.join(root, model))
        assert len(config.input) == len(inputs) == 1 and len(config.output) == len(outputs) == 1
        _same_tensor(config.input[0], inputs[0], batched=True)
        _same_tensor(config.output[0], outputs[0], batched=True)
        assert config.HasField("dynamic_batching")
        assert [group.kind for group in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
        label_file = os.path.join(folder, config.output[0].label_filename)
        assert open(label_file).read().splitlines() == labels
        if platform == "onnxruntime_onnx":
            assert os.path.samefile(os.path.join(folder, "1", "model.onnx"), os.path.join(root, model))
        else:  # build_engines.sh puts the engine there, on the device
            assert not os.path.exists(os.path.join(folder, "1"))


def test_the_schema_check_has_teeth(tiny_bundle):
    text = open(os.path.join(tiny_bundle[0], "triton", "tiny_eca_trt", "config.pbtxt")).read()
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse(text.replace("max_batch_size", "max_batch_sise"), model_config_pb2.ModelConfig())


def _triton_block(root):
    script = open(os.path.join(root, "build_engines.sh")).read()
    return script[script.index("# Triton:"):]


def test_build_script_puts_each_engine_in_its_plan_model(tiny_bundle, tmp_path):
    """Run the script's Triton lines (the engines stand in as files: building them needs TensorRT)."""
    device = str(tmp_path / "device")
    shutil.copytree(tiny_bundle[0], device)
    engines = {"tiny_eca.fp32.engine": "tiny_eca_trt", "tiny_in_graph.fp32.engine": "tiny_in_graph_trt"}
    for engine in engines:
        with open(os.path.join(device, engine), "wb") as handle:
            handle.write(engine.encode() * 3)
    proc = subprocess.run(["sh", "-c", "set -e\n" + _triton_block(device)], cwd=device, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    for engine, name in engines.items():
        plan = os.path.join(device, "triton", name, "1", "model.plan")
        assert open(plan, "rb").read() == engine.encode() * 3
    rerun = subprocess.run(["sh", "-c", "set -e\n" + _triton_block(device)], cwd=device, capture_output=True)
    assert rerun.returncode == 0  # a rebuilt engine replaces the plan


def test_onnx_model_runs_from_the_unpacked_repository(tiny_imagenet_onnx, tmp_path):
    """The tarball stores each model once (the repository's copy is a hard link) and unpacks into a repository
    whose model.onnx runs and gives the bundle's logits."""
    import onnxruntime as ort
    from bundling.bundle import bundle
    output = tmp_path / "jetson.tar.gz"
    bundle([tiny_imagenet_onnx], output)
    with tarfile.open(str(output)) as tar:
        member = tar.getmember("jetson/triton/tiny_eca_onnx/1/model.onnx")
        assert member.islnk() and member.linkname == "jetson/tiny_eca.onnx"
        tar.extractall(str(tmp_path / "device"))
    served = str(tmp_path / "device" / "jetson" / "triton" / "tiny_eca_onnx" / "1" / "model.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    outputs = [ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
               for path in (served, tiny_imagenet_onnx)]
    np.testing.assert_array_equal(*outputs)


def _build_on_device(bundle_root, device):
    """The bundle copied to ``device``, its first engine built as build_engines.sh does, and its Triton lines
    run."""
    shutil.copytree(bundle_root, device)
    words = build_lines(device)["tiny_eca.onnx"]
    build = subprocess.run([sys.executable] + words[1:], cwd=device, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    with open(os.path.join(device, "tiny_in_graph.fp32.engine"), "wb"):
        pass  # not needed here; the script's lines only place it
    assert subprocess.run(["sh", "-c", _triton_block(device)], cwd=device).returncode == 0


@pytest.mark.gpu
def test_plan_in_the_repository_matches_its_config(tiny_bundle, tmp_path):
    """The engine build_engines.sh puts in place has the config's tensors, types and largest batch."""
    import tensorrt as trt
    from tritonclient.utils import triton_to_np_dtype
    device = str(tmp_path / "device")
    _build_on_device(tiny_bundle[0], device)
    folder = os.path.join(device, "triton", "tiny_eca_trt")
    config = parse_config(os.path.join(folder, "config.pbtxt"))
    with open(os.path.join(folder, "1", "model.plan"), "rb") as handle:
        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(handle.read())
    assert engine is not None
    for tensor in list(config.input) + list(config.output):
        shape = list(engine.get_tensor_shape(tensor.name))
        assert shape[0] == -1 and shape[1:] == list(tensor.dims)
        triton_type = model_config_pb2.DataType.Name(tensor.data_type)[len("TYPE_"):]
        assert np.dtype(trt.nptype(engine.get_tensor_dtype(tensor.name))) == np.dtype(triton_to_np_dtype(triton_type))
    largest = engine.get_tensor_profile_shape(config.input[0].name, 0)[2][0]
    assert largest == config.max_batch_size == 4


@pytest.mark.gpu
def test_tensorrt_plan_model_is_served(tiny_bundle, tmp_path):
    """The tensorrt_plan model as Triton serves it, against ONNX Runtime. Needs a GPU, TensorRT and a Triton
    server with the TensorRT backend (`tritonserver` on PATH), none of which a CPU machine has."""
    if shutil.which("tritonserver") is None:
        pytest.skip("tritonserver is not installed (Triton's server ships as NVIDIA's container or JetPack "
                    "tarball, not on PyPI), so the tensorrt_plan model cannot be served here")
    import tritonclient.grpc as grpcclient
    device = str(tmp_path / "device")
    _build_on_device(tiny_bundle[0], device)
    server = subprocess.Popen(["tritonserver", "--model-repository=triton", "--model-control-mode=explicit",
                               "--load-model=tiny_eca_trt", "--grpc-port=18001", "--http-port=18000",
                               "--metrics-port=18002"], cwd=device)
    try:
        client = grpcclient.InferenceServerClient("localhost:18001")
        deadline = time.time() + 120
        while time.time() < deadline and not _ready(client, "tiny_eca_trt"):
            time.sleep(1)
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        request = grpcclient.InferInput("input", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        served = client.infer("tiny_eca_trt", [request]).as_numpy("logits")
        import onnxruntime as ort
        session = ort.InferenceSession(os.path.join(device, "tiny_eca.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(served, session.run(None, {"input": x})[0], atol=1e-3)
    finally:
        server.terminate()
        server.wait(timeout=60)


def _ready(client, name):
    try:
        return client.is_model_ready(name)
    except Exception:  # noqa: BLE001  (the server is still starting)
        return False
