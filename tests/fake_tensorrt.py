"""A fake ``tensorrt`` module, just enough for Polygraphy to drive a build; it builds nothing real.

It stands at the module boundary only: our code and Polygraphy's loaders run unchanged on top of it, so tests see
the exact TensorRT calls Polygraphy makes for the arguments we give it (flags set, pools, DLA, strong typing,
the calibrator). Per version it has what the real API has: 8.5 lacks the 8.6 options (hardware compatibility,
builder optimization level), 10.x adds STRONGLY_TYPED, 11.x removed the FP16/INT8 flags, calibrators and DLA.
The "engine" is JSON describing what was asked; its inspector reports INT8/FP16 layers accordingly.

Its ONNX parser refuses what the real one refuses, with the real one's words, so no test passes on a model a
device would reject: Q/DQ that is not INT8 with zero point 0, an op outside the release's documented list, an opset
beyond its range. It reads the documented lists (deploy/data/trt_onnx_parsers.json) itself and checks the graph
by its own code, not through deploy.trt.conformance, so a mistake there cannot hide here.
"""
import enum
import json
import sys
import types

import numpy as np
import onnx
from onnx import numpy_helper

from deploy.onnx_info import inspect_onnx
from deploy.trt.conformance import PARSERS_FILE
from deploy.trt.version import TrtVersion

JETPACK5, JETPACK6, DESKTOP11 = "8.5.2.2", "10.3.0", "11.4.0"


class _Recorder:
    """Attributes that were set, and calls to set_flag and set_memory_pool_limit."""

    def __init__(self):
        self.flags, self.pools, self.profiles = set(), {}, []
        self.DLA_core, self.default_device_type, self.num_optimization_profiles = -1, None, 0

    def set_flag(self, flag):
        self.flags.add(flag.name)

    def clear_flag(self, flag):
        self.flags.discard(flag.name)

    def get_flag(self, flag):
        return flag.name in self.flags

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool.name] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile.shapes)
        self.num_optimization_profiles += 1
        return len(self.profiles) - 1

    def create_timing_cache(self, data):
        return types.SimpleNamespace(data=data, serialize=lambda: _Buffer(b"timing"),
                                     combine=lambda other, ignore_mismatch: True)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return getattr(self, "timing_cache", None)


def _documented(version: TrtVersion) -> dict:
    with open(PARSERS_FILE, "r", encoding="utf-8") as handle:
        releases = json.load(handle)["releases"]
    return [r for r in releases if TrtVersion.parse(r["from"]).release[:2] <= version.release[:2]][-1]


def parser_errors(path: str, version: TrtVersion) -> list:
    """The errors TensorRT's ONNX parser reports for the model at ``path`` (its messages, shortened)."""
    model = onnx.load(path, load_external_data=False)
    documented, errors = _documented(version), []
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset > documented["opset_max"]:
        errors.append("Unsupported ONNX opset version: {}".format(opset))
    constants = {init.name: init for init in model.graph.initializer}
    for index, node in enumerate(model.graph.node):
        where = "In node {} with name: {} and operator: {}: ".format(index, node.name, node.op_type)
        if node.op_type not in documented["operators"] or node.domain not in ("", "ai.onnx"):
            errors.append(where + "No importer registered for op: " + node.op_type)
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        tensors = [constants.get(name) for name in node.input[2:3]] + ([constants.get(node.input[0])] if
                                                                        node.op_type == "DequantizeLinear" else [])
        for tensor in (t for t in tensors if t is not None):
            if tensor.data_type != onnx.TensorProto.INT8:
                errors.append(where + "Unsupported ONNX data type: " + onnx.TensorProto.DataType.Name(tensor.data_type))
        zero_point = tensors[0] if len(node.input) > 2 and node.input[2] else None
        if zero_point is not None and np.any(numpy_helper.to_array(zero_point)):
            errors.append(where + "Assertion failed: TRT only supports symmetric quantization - zeroPt must be all "
                                  "zeros")
    return errors


class _Buffer(bytes):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_tensorrt(version: str):
    v = TrtVersion.parse(version)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.rejects_cache = trt.ignores_qdq = False  # switches for the failures TensorRT is known to hide
    trt.parser_errors = []  # what the last parse reported
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", ["TF32", "GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS",
                                                   "DIRECT_IO"] + (["FP16", "INT8"] if v.has_weak_typing else [])
                                   + (["VERSION_COMPATIBLE"] if v.has_compatibility_options else []), start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH"] + (["STRONGLY_TYPED"] if v.major == 10 else []), start=0)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
    trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"], start=0)
    trt.LayerType = enum.IntEnum("LayerType", ["CONVOLUTION", "QUANTIZE", "DEQUANTIZE", "SHAPE"], start=0)
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED"], start=0)
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"], start=0)
    if v.has_compatibility_options:
        trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"], start=0)

    class ILogger:
        Severity = enum.IntEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"], start=0)

        def __init__(self):
            self.min_severity = None

    trt.ILogger, trt.Logger = ILogger, ILogger
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    if v.has_implicit_int8:
        for name in ("IInt8EntropyCalibrator2", "IInt8EntropyCalibrator", "IInt8MinMaxCalibrator",
                     "IInt8LegacyCalibrator", "IInt8Calibrator"):
            setattr(trt, name, type(name, (), {"__init__": lambda self: None}))

    class Network(list):
        def __init__(self, flags):
            super().__init__()
            self.flags, self.inputs = flags, []

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, index):
            return self.errors[index]

        def parse_from_file(self, path):
            self.errors = trt.parser_errors = parser_errors(path, v)
            if self.errors:
                return False
            info = inspect_onnx(path)
            self.network.model = info.precision
            self.network.inputs = [types.SimpleNamespace(name=name, shape=tuple(-1 if d is None else d for d in shape),
                                                         is_shape_tensor=False, dtype=None)
                                   for name, shape in info.inputs.items()]
            if info.precision.qdq:
                self.network.append(types.SimpleNamespace(type=trt.LayerType.QUANTIZE, precision_is_set=False))
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        def get_shape(self, name):
            return self.shapes[name]

    class Builder:
        def __init__(self, logger):
            self.num_DLA_cores = 2 if v.has_dla else 0

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return _Recorder()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            flag = trt.NetworkDefinitionCreationFlag
            typed = network.get_flag(flag.STRONGLY_TYPED) if v.major == 10 else v.major > 10
            record = {"flags": sorted(config.flags), "strongly_typed": bool(typed), "pools": config.pools,
                      "dla_core": config.DLA_core, "profiles": [{k: list(s) for k, s in p.items()}
                                                                for p in config.profiles],
                      "calibrator": getattr(config, "int8_calibrator", None) is not None,
                      "int8": "INT8" in config.flags or network.model.qdq,
                      "fp16": "FP16" in config.flags or network.model.fp16}
            if record["calibrator"]:  # TensorRT reads the cache; one it rejects makes it ask for data
                record["int8"] = bool(config.int8_calibrator.read_calibration_cache()) and not trt.rejects_cache
                if trt.rejects_cache:
                    config.int8_calibrator.get_batch(["input"])
            record["int8"] = record["int8"] and not trt.ignores_qdq
            return json.dumps(record).encode()

    class Engine:
        def __init__(self, record):
            self.record = record

        def create_execution_context(self):
            return types.SimpleNamespace(set_input_shape=lambda name, shape: True)

        def create_engine_inspector(self):
            return self

        def get_engine_information(self, form):
            kind = "Int8" if self.record["int8"] else ("FP16" if self.record["fp16"] else "FP32")
            layer = {"Inputs": [{"Format/Datatype": "Row major linear {} format".format(kind)}]}
            return json.dumps({"Layers": [layer]})

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine(json.loads(bytes(data)))

    trt.Builder, trt.OnnxParser, trt.Runtime, trt.ICudaEngine = Builder, OnnxParser, Runtime, Engine
    return trt


def install(monkeypatch, version: str):
    """Put a fake TensorRT ``version`` where ``import tensorrt`` and Polygraphy's lazy imports find it."""
    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    import polygraphy.backend.trt  # noqa: F401 (load the modules whose lazy ``trt`` is replaced below)
    for name, module in list(sys.modules.items()):
        if name.startswith("polygraphy") and type(getattr(module, "trt", None)).__name__ == "LazyModule":
            monkeypatch.setattr(module, "trt", trt)
    return trt
