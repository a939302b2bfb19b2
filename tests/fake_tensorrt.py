"""Fake ``tensorrt`` module objects for LOGIC tests of the version dispatch; they run no TensorRT.

Each has (or lacks) the attributes the real version has: 8.5 (JetPack 5) keeps weak typing and calibrators but
lacks the 8.6 options; 10.3 (JetPack 6) adds strong typing, version/hardware compatibility and optimization
levels; 11.4 removed the FP16/INT8 builder flags, calibrators and DLA.
"""
import enum
import types

from deploy.trt.compat import TrtVersion

JETPACK5, JETPACK6, DESKTOP11 = "8.5.2.2", "10.3.0", "11.4.0"


def fake_tensorrt(version: str, drop=()):
    v = TrtVersion.parse(version)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    builder_flags = ["GPU_FALLBACK"] + (["FP16", "INT8"] if v.major < 11 else [])
    builder_flags += ["VERSION_COMPATIBLE"] if v.release >= (8, 6, 0) else []
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
    network_flags = ["EXPLICIT_BATCH"] if v.major < 11 else []  # 10.x keeps it, deprecated and ignored
    network_flags += ["STRONGLY_TYPED"] if v.major >= 10 else []
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", network_flags, start=0)
    config = {}
    if v.major < 11:
        config.update(int8_calibrator=None, set_calibration_profile=lambda self, p: None)
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
        trt.DeviceType = enum.IntEnum("DeviceType", ["GPU", "DLA"], start=0)
    if v.release >= (8, 6, 0):
        config["builder_optimization_level"] = 3
        trt.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel", ["NONE", "AMPERE_PLUS"], start=0)
    trt.IBuilderConfig = type("IBuilderConfig", (), config)
    trt.IExecutionContext = type("IExecutionContext", (), {"execute_async_v3": lambda self, s: True})

    class ILogger:
        Severity = enum.IntEnum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"], start=0)

        def __init__(self):
            pass

    trt.ILogger = ILogger
    for name in drop:
        delattr(trt, name)
    return trt


# -- a simulated TensorRT and CUDA device, for LOGIC tests of the build and runner mechanics ---------------------
#
# The simulated engine "executes" by running the source ONNX model in ONNX Runtime on what the runner copied
# into simulated device memory, and writes the result where the runner said the output lives. This checks our
# glue (flags, profiles, addresses, copies, shapes, CUDA graph capture and replay, sidecars, the engine cache)
# against the API as documented; it cannot check TensorRT itself.

import json  # noqa: E402

import numpy as np  # noqa: E402

from deploy.trt.cuda import CudaBackend, DeviceInfo  # noqa: E402


class SimDevice(CudaBackend):
    name = "simulated"

    def __init__(self, device=DeviceInfo("Simulated GPU", 8, 7)):
        self.info = device
        self.memory, self.next_pointer = {}, 0x10000
        self.capturing, self.launches, self.mallocs = None, 0, 0

    def malloc(self, nbytes):
        pointer = self.next_pointer
        self.next_pointer += nbytes + 4096
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        self.mallocs += 1
        return pointer

    def free(self, pointer):
        del self.memory[pointer]

    def htod_async(self, device_pointer, host, stream):
        self.memory[device_pointer][:host.nbytes] = host.view(np.uint8).reshape(-1)

    def dtoh_async(self, host, device_pointer, stream):
        host.view(np.uint8).reshape(-1)[:] = self.memory[device_pointer][:host.nbytes]

    def enqueue(self, operation):
        if self.capturing is not None:
            self.capturing.append(operation)
        else:
            operation()

    def create_stream(self):
        return 7

    def synchronize(self, stream):
        pass

    def destroy_stream(self, stream):
        pass

    def create_event(self):
        return object()

    def record_event(self, event, stream):
        pass

    def elapsed_ms(self, start, end):
        return 0.25

    def destroy_event(self, event):
        pass

    def begin_capture(self, stream):
        self.capturing = []

    def end_capture(self, stream):
        graph, self.capturing = self.capturing, None
        return graph

    def instantiate(self, graph):
        return list(graph)

    def launch_graph(self, graph_exec, stream):
        self.launches += 1
        for operation in graph_exec:
            operation()

    def destroy_graph(self, graph, graph_exec):
        pass

    def device_info(self):
        return self.info


class _Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(shape)


def simulated_tensorrt(version: str, device: SimDevice, reject_calibration_cache: bool = False,
                       parser_error=None):
    trt = fake_tensorrt(version)
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"], start=0)
    trt.DataType = enum.IntEnum("DataType", ["FLOAT", "HALF"], start=0)
    trt.nptype = lambda dtype: {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16}[dtype]
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED"], start=0)
    trt.LayerInformationFormat = enum.IntEnum("LayerInformationFormat", ["ONELINE", "JSON"], start=0)
    trt.calls = []
    v = TrtVersion.parse(version)

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.layers = flags, [], []

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, index):
            return self.inputs[index]

        def get_layer(self, index):
            return self.layers[index]

    class ParserError:
        def __init__(self, name):
            self.name = name

        def desc(self):
            return "No importer registered for op: Weird"

        def node(self):
            return 4

        def node_name(self):
            return self.name

        def node_operator(self):
            return "Weird"

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, index):
            return self.errors[index]

        def parse(self, data, path=None):
            import onnxruntime as ort
            if parser_error:
                self.errors.append(ParserError(parser_error))
                return False
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.network.onnx_path = path
            self.network.inputs = [_Tensor(i.name, [d if isinstance(d, int) else -1 for d in i.shape])
                                   for i in session.get_inputs()]
            self.network.outputs = [(o.name, [d if isinstance(d, int) else -1 for d in o.shape])
                                    for o in session.get_outputs()]
            layer = types.SimpleNamespace(num_outputs=1, get_output=lambda j: _Tensor("/conv1/Conv_output_0", ()))
            self.network.layers = [layer]
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = [list(low), list(opt), list(high)]

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"simulated timing cache"

        def serialize(self):
            return self.data

    class Config:
        def __init__(self):
            self.flags, self.profiles, self.pool = [], [], {}
            self.profiling_verbosity = None
            self.int8_calibrator = None
            self.timing_cache = None

        def set_flag(self, flag):
            self.flags.append(flag.name)

        def set_memory_pool_limit(self, pool, nbytes):
            self.pool[pool.name] = nbytes

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile):
            self.calibration_profile = profile

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calibrator = config.int8_calibrator
            if calibrator is not None:
                calibrator.read_calibration_cache()
                if reject_calibration_cache:
                    calibrator.get_batch(["input"])
            trt.calls.append(("build", network.flags, list(config.flags), dict(config.pool),
                              config.profiling_verbosity, getattr(config, "builder_optimization_level", None)))
            plan = {"simulated": version, "onnx": network.onnx_path,
                    "inputs": {t.name: list(t.shape) for t in network.inputs},
                    "outputs": {name: shape for name, shape in network.outputs},
                    "profile": config.profiles[0].shapes if config.profiles else {},
                    "precision": "Int8" if "INT8" in config.flags else ("FP16" if "FP16" in config.flags else "FP32")}
            return json.dumps(plan).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            low, _, high = self.engine.profile_of(name)
            if not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.engine.plan["inputs"]:
                return self.shapes.get(name, tuple(self.engine.plan["inputs"][name]))
            batch = next(iter(self.shapes.values()))[0] if self.shapes else -1
            return (batch,) + tuple(self.engine.plan["outputs"][name][1:])

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer
            return True

        def execute_async_v3(self, stream_handle):
            shapes, addresses = dict(self.shapes), dict(self.addresses)
            outputs = {name: self.get_tensor_shape(name) for name in self.engine.plan["outputs"]}

            def run():
                feed = {}
                for name, shape in shapes.items():
                    count = int(np.prod(shape)) * 4
                    feed[name] = device.memory[addresses[name]][:count].view(np.float32).reshape(shape).copy()
                results = self.engine.session().run(list(outputs), feed)
                for name, value in zip(outputs, results):
                    raw = np.ascontiguousarray(value, np.float32).view(np.uint8).reshape(-1)
                    device.memory[addresses[name]][:raw.size] = raw

            device.enqueue(run)
            return True

    class Inspector:
        def __init__(self, engine):
            self.engine, self.execution_context = engine, None

        def get_engine_information(self, fmt):
            formats = {"FP32": "Row major linear FP32", "FP16": "Row major linear FP16 format",
                       "Int8": "Thirty-two wide channel vectorized row major Int8 format"}
            layer = {"Name": "conv1", "Inputs": [{"Format/Datatype": formats[self.engine.plan["precision"]]}]}
            return json.dumps({"Layers": [layer, layer]})

    class Engine:
        def __init__(self, plan):
            self.plan, self._session = plan, None
            self.names = list(plan["inputs"]) + list(plan["outputs"])

        num_io_tensors = property(lambda self: len(self.names))

        def session(self):
            import onnxruntime as ort
            if self._session is None:
                self._session = ort.InferenceSession(self.plan["onnx"], providers=["CPUExecutionProvider"])
            return self._session

        def profile_of(self, name):
            if name in self.plan["profile"]:
                return tuple(tuple(s) for s in self.plan["profile"][name])
            shape = tuple(self.plan["inputs"][name])
            return shape, shape, shape

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.plan["inputs"] else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return tuple((self.plan["inputs"].get(name) or self.plan["outputs"][name]))

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def create_execution_context(self):
            return Context(self)

        def create_engine_inspector(self):
            return Inspector(self)

    if v.major >= 10:
        Engine.get_tensor_profile_shape = lambda self, name, index: self.profile_of(name)
    else:
        Engine.get_profile_shape = lambda self, index, name: self.profile_of(name)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            trt.calls.append(("deserialize",))
            try:
                plan = json.loads(bytes(data).decode())
            except ValueError:
                plan = {}
            if plan.get("simulated") != version:
                self.logger.log(trt.ILogger.Severity.ERROR, "Serialization assertion: Version tag does not match")
                return None
            return Engine(plan)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def tiny_matmul_onnx(path, fp16=False, qdq=False):
    """A one-MatMul ONNX model in FP32, FP16 (onnxconverter-common) or with Q/DQ nodes, for precision checks."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")]
    source = "x"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        source = "xd"
    nodes.append(helper.make_node("MatMul", [source, "w"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if fp16:
        from onnxconverter_common import float16
        model = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, path)
    return path
