"""ONNX -> TensorRT engine (a plain plan file) + JSON sidecar, through Polygraphy's TensorRT loaders.

``plan.plan_build`` decides what to build (precision and flags for the running TensorRT); this module makes the
matching Polygraphy calls (``NetworkFromOnnxPath``, ``CreateConfig``, ``EngineBytesFromNetwork``), then reads the
engine back (``EngineFromBytes``) to prove its precision, and writes engine and sidecar atomically (Polygraphy's
``SaveEngine`` writes in place, so a failed write could leave half an engine behind).
"""
import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from ..errors import CheckFailedError, UserError
from ..fileio import sha256_file, write_bytes, write_json
from ..metadata import sidecar_path
from .compat import import_tensorrt, polygraphy_errors
from .inspect import known_layers, summarize_layer_precisions
from .plan import MIB, BuildOptions, BuildPlan, plan_build
from .version import TrtVersion


@dataclass
class BuildResult:
    onnx: str
    engine_path: str
    sidecar_path: str
    trt_version: str
    device: Dict[str, object]
    precision: str
    strongly_typed: bool
    trt_flags: List[str]
    profiles: List[Dict[str, object]]
    layer_precisions: Dict[str, int]
    engine_size: int
    build_seconds: float
    trtexec: str
    polygraphy: str
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


# -- the Polygraphy calls (our glue; tests check them per precision and version) ----------------------------------

def network_loader(plan: BuildPlan):
    from polygraphy.backend.trt import NetworkFromOnnxPath
    # 11.x networks are always strongly typed; its flag is deprecated, so it is only passed on 10.x.
    strongly_typed = True if plan.strongly_typed and plan.version.has_strongly_typed_flag else None
    return NetworkFromOnnxPath(plan.onnx, strongly_typed=strongly_typed)


def config_loader(trt, plan: BuildPlan, calibrator=None):
    """Polygraphy's CreateConfig for the plan. Its default profiling verbosity, DETAILED, keeps the per-layer
    formats that the INT8 check reads; tf32=False keeps FP32 layers in FP32."""
    from polygraphy.backend.trt import CreateConfig, PostprocessConfig, Profile

    options = plan.options
    profiles = None
    if plan.profiles:
        profile = Profile()
        for shapes in plan.profiles:
            profile.add(shapes.input_name, min=shapes.min, opt=shapes.opt, max=shapes.max)
        profiles = [profile]
    kwargs = dict(tf32=False, fp16=plan.fp16 or None, int8=plan.int8 or None, calibrator=calibrator,
                  profiles=profiles, load_timing_cache=options.timing_cache,
                  builder_optimization_level=options.opt_level,
                  version_compatible=options.version_compatible or None)
    if options.workspace_mib:
        kwargs["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: options.workspace_mib * MIB}
    if options.hardware_compatible:
        kwargs["hardware_compatibility_level"] = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.dla_core is not None:
        kwargs.update(use_dla=True, allow_gpu_fallback=options.gpu_fallback or None)
    config = CreateConfig(**{key: value for key, value in kwargs.items() if value is not None})
    if options.dla_core:  # Polygraphy always selects DLA core 0
        core = int(options.dla_core)
        config = PostprocessConfig(config, lambda builder, network, cfg: setattr(cfg, "DLA_core", core))
    return config


def engine_layer_precisions(engine_bytes: bytes, plan: BuildPlan) -> Dict[str, int]:
    """Layer precisions of the built engine, read back through the engine inspector."""
    from polygraphy.backend.trt import engine_from_bytes
    import tensorrt as trt

    engine = engine_from_bytes(engine_bytes)
    try:
        context = engine.create_execution_context() if plan.profiles else None
        for shapes in plan.profiles:  # with dynamic shapes, formats are only reported for a context with shapes
            context.set_input_shape(shapes.input_name, shapes.opt)
        inspector = engine.create_engine_inspector()
        if context is not None:
            inspector.execution_context = context
        return summarize_layer_precisions(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:  # noqa: BLE001 (an inspector that fails must not fail a good build; the counts say so)
        return summarize_layer_precisions(None)


def check_precision(plan: BuildPlan, counts: Dict[str, int], calibration_requests: int, notes: List[str]) -> None:
    """A build that silently lost its INT8 must not pass for an INT8 engine."""
    if calibration_requests:
        raise CheckFailedError("TensorRT did not accept the calibration cache {} (it asked for calibration data "
                               "instead), so the INT8 layers would have no real scales".format(
                                   plan.options.calib_cache))
    if known_layers(counts) == 0:
        notes.append("the engine inspector reported no per-layer formats, so the layer precisions are unchecked")
        return
    if plan.precision.startswith("int8") and counts.get("int8", 0) == 0:
        raise CheckFailedError("the {} engine has no INT8 layers ({}); TensorRT ignored the {}".format(
            plan.precision, counts, "calibration cache" if plan.options.calib_cache else "Q/DQ nodes"))
    if plan.precision == "fp16" and counts.get("fp16", 0) == 0:
        notes.append("no layer runs in FP16 ({}); TensorRT chose FP32 kernels".format(counts))


def _model_metadata(onnx_path: str, notes: List[str]) -> Dict[str, str]:
    from ..metadata import read_onnx_metadata
    try:
        return read_onnx_metadata(onnx_path)
    except UserError as exc:
        notes.append("no model metadata in the sidecar ({}); deploy.infer needs it to preprocess".format(exc))
        return {}


def _device(notes: List[str]):
    from .cuda import device_info
    try:
        return device_info()
    except UserError as exc:
        notes.append("could not name the GPU in the sidecar ({})".format(exc))
        return None


def build_engine(onnx_path, output: Optional[str] = None, options: Optional[BuildOptions] = None,
                 log=None) -> BuildResult:
    """Build ``onnx_path`` into a plain engine file plus its sidecar; returns what was built and checked."""
    from polygraphy.backend.trt import EngineBytesFromNetwork

    options = (options or BuildOptions()).validate()
    trt = import_tensorrt("build TensorRT engines")
    plan = plan_build(os.fspath(onnx_path), output, trt.__version__, options)
    notes = list(plan.notes)
    calibration, calibrator, probe = None, None, None
    if options.implicit_int8:
        from .calibrator import check_calibration_cache, make_cache_calibrator
        calibration = check_calibration_cache(options.calib_cache, TrtVersion.parse(trt.__version__))
        calibrator, probe = make_cache_calibrator(trt, calibration)
    metadata, device = _model_metadata(plan.onnx, notes), _device(notes)
    if log is not None:
        log("building {} with TensorRT {} ({}); this can take minutes".format(plan.engine, trt.__version__,
                                                                             plan.precision))
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Polygraphy's warnings go to stdout; --json needs it clean
            engine_bytes = bytes(EngineBytesFromNetwork(network_loader(plan), config_loader(trt, plan, calibrator),
                                                        save_timing_cache=options.timing_cache)())
    except polygraphy_errors() as exc:
        if probe is not None and probe.requests:
            check_precision(plan, {}, probe.requests, notes)
        raise CheckFailedError("TensorRT {} could not build {}: {}".format(
            trt.__version__, plan.onnx, str(exc).strip().splitlines()[-1] if str(exc).strip() else "see its log"))
    build_seconds = time.perf_counter() - started
    counts = engine_layer_precisions(engine_bytes, plan)
    check_precision(plan, counts, probe.requests if probe else 0, notes)

    write_bytes(plan.engine, engine_bytes)
    from .sidecar import make_sidecar
    plan_dict = plan.to_dict()
    sidecar = make_sidecar(plan, engine_size=len(engine_bytes), trt_version=trt.__version__, device=device,
                           metadata=metadata, onnx_sha256=sha256_file(plan.onnx), layer_precisions=counts,
                           calibration=calibration.to_dict() if calibration else None, notes=notes)
    write_json(sidecar_path(plan.engine), sidecar)
    return BuildResult(plan.onnx, plan.engine, sidecar_path(plan.engine), trt.__version__, sidecar["device"],
                       plan.precision, plan.strongly_typed, plan.trt_flags, plan_dict["profiles"], counts,
                       len(engine_bytes), build_seconds, plan_dict["trtexec"], plan_dict["polygraphy"], notes)


def dry_run(onnx_path, output: Optional[str] = None, options: Optional[BuildOptions] = None,
            trt_version: Optional[str] = None) -> BuildPlan:
    """The plan for the installed TensorRT, or for ``trt_version`` (default: 10.3, JetPack 6.1/6.2) without it."""
    from .version import DEFAULT_TARGET
    if trt_version is None:
        from .compat import tensorrt_available
        if tensorrt_available():
            trt_version = import_tensorrt("plan a build for the installed TensorRT").__version__
    plan = plan_build(os.fspath(onnx_path), output, trt_version or DEFAULT_TARGET, options)
    if trt_version is None:
        plan.notes.append("TensorRT is not installed here: planned for TensorRT {} (JetPack 6.1/6.2); choose another "
                          "with --trt-version".format(DEFAULT_TARGET))
    return plan

