"""ONNX -> TensorRT engine (plain plan file) + JSON sidecar, on the device that will run it.

The work is split so that everything that decides *what* to build is plain Python, testable without TensorRT:

- ``BuildOptions``: what the user asked for (the same options for ``cli.py build`` and ``python -m deploy.build``,
  declared once in ``BUILD_CLI_OPTIONS``);
- ``plan_build``: the version dispatch. TensorRT 10.x/11.x build a strongly typed network, whose precision comes
  from the FP16 or Q/DQ model itself; 8.x sets the FP16/INT8 builder flags the model needs. Implicit INT8 from a
  calibration cache exists up to 10.x; 11 removed it. Options a version lacks fail in one line naming the version;
- ``trtexec_command``: the equivalent trtexec line, printed with every build;
- ``build_engine``: the mechanical part, parse -> configure -> build -> inspect -> check -> write.
"""
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

from ..errors import CheckFailedError, UserError
from ..fileio import sha256_file, write_bytes, write_json
from ..metadata import sidecar_path
from .compat import TrtCompat, import_tensorrt, make_logger
from .inspect import known_layers, summarize_layer_precisions
from .onnx_info import OnnxPrecision, inspect_onnx
from .profiles import ShapeProfile, format_shape, resolve_batch_range, resolve_profiles

MIB = 1 << 20


@dataclass(frozen=True)
class CliOption:
    """One build option, declared once for both the argparse (deploy.build) and click (cli.py build) fronts."""

    flag: str
    dest: str
    kind: str  # "int", "path" or "flag"
    help: str
    metavar: Optional[str] = None


BUILD_CLI_OPTIONS = (
    CliOption("--min-batch", "min_batch", "int", "Smallest batch of the optimization profile (default 1).", "N"),
    CliOption("--opt-batch", "opt_batch", "int", "Batch TensorRT tunes for (default: the min batch).", "N"),
    CliOption("--max-batch", "max_batch", "int", "Largest batch of the optimization profile (default 8).", "N"),
    CliOption("--workspace", "workspace_mib", "int", "Builder workspace limit in MiB (default: TensorRT's).", "MIB"),
    CliOption("--timing-cache", "timing_cache", "path", "Read, and update, this timing cache file.", "FILE"),
    CliOption("--dla-core", "dla_core", "int", "Build for this DLA core (Jetson; FP16/INT8 models).", "N"),
    CliOption("--gpu-fallback", "gpu_fallback", "flag", "With --dla-core: run layers DLA lacks on the GPU."),
    CliOption("--opt-level", "opt_level", "int", "Builder optimization level 0-5 (TensorRT 8.6+).", "0-5"),
    CliOption("--version-compatible", "version_compatible", "flag",
              "Engine also loads on later TensorRT versions (8.6+)."),
    CliOption("--hardware-compatible", "hardware_compatible", "flag",
              "Engine runs on any Ampere-or-newer GPU (8.6+)."),
    CliOption("--calib-cache", "calib_cache", "path",
              "Implicit INT8 from this calibration cache (legacy; TensorRT 8.x-10.x only).", "FILE"),
)


@dataclass
class BuildOptions:
    min_batch: Optional[int] = None
    opt_batch: Optional[int] = None
    max_batch: Optional[int] = None
    workspace_mib: Optional[int] = None
    timing_cache: Optional[str] = None
    dla_core: Optional[int] = None
    gpu_fallback: bool = False
    opt_level: Optional[int] = None
    version_compatible: bool = False
    hardware_compatible: bool = False
    calib_cache: Optional[str] = None

    @classmethod
    def from_mapping(cls, values: Dict[str, object]) -> "BuildOptions":
        known = {option.dest for option in BUILD_CLI_OPTIONS}
        return cls(**{key: value for key, value in values.items() if key in known})

    def validate(self) -> "BuildOptions":
        """Checks that need no TensorRT, so a typo fails before a slow import or a long build."""
        if any(v is not None for v in (self.min_batch, self.opt_batch, self.max_batch)):
            resolve_batch_range(self.min_batch, self.opt_batch, self.max_batch)
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UserError("--workspace must be a positive number of MiB, got {}".format(self.workspace_mib))
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise UserError("--opt-level must be between 0 and 5, got {}".format(self.opt_level))
        if self.dla_core is not None and self.dla_core < 0:
            raise UserError("--dla-core must be 0 or more, got {}".format(self.dla_core))
        if self.gpu_fallback and self.dla_core is None:
            raise UserError("--gpu-fallback only applies together with --dla-core")
        if self.calib_cache is not None and not os.path.isfile(self.calib_cache):
            raise UserError("no such calibration cache: {}".format(self.calib_cache))
        return self

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass
class BuildPlan:
    """What will be built, decided from the TensorRT version, the options and the model's own precision."""

    trt_version: str
    precision: str  # fp32 | fp16 | int8 (Q/DQ) | int8-calib
    strongly_typed: bool
    network_flags: List[str]
    builder_flags: List[str]
    options: BuildOptions
    notes: List[str] = field(default_factory=list)

    @property
    def cache_tag(self) -> str:
        """Precision as it appears in cached engine names; implicit and explicit INT8 must not collide."""
        return "int8c" if self.precision == "int8-calib" else self.precision

    @property
    def expects_int8(self) -> bool:
        return self.precision.startswith("int8")

    def to_dict(self) -> Dict[str, object]:
        return {"trt_version": self.trt_version, "precision": self.precision, "strongly_typed": self.strongly_typed,
                "network_flags": self.network_flags, "builder_flags": self.builder_flags, "notes": self.notes}


def plan_build(compat: TrtCompat, options: BuildOptions, precision: OnnxPrecision) -> BuildPlan:
    """The version dispatch of a build. Raises UserError for what the running TensorRT cannot do."""
    version, notes = compat.version, []
    calibrated = options.calib_cache is not None
    if calibrated and precision.qdq:
        raise UserError("the model already has Q/DQ nodes (explicit INT8); a calibration cache is only for implicit "
                        "INT8 of an FP32/FP16 model, so leave --calib-cache out")
    if calibrated:
        compat.require("implicit_int8")
    for enabled, feature in ((options.version_compatible, "version_compatible"),
                             (options.hardware_compatible, "hardware_compatible"),
                             (options.opt_level is not None, "opt_level"), (options.dla_core is not None, "dla")):
        if enabled:
            compat.require(feature)

    # Weak typing only where it is still needed: 8.x always, 10.x for implicit INT8 (a calibrator).
    strongly_typed = compat.has("strongly_typed") or compat.strong_typing_always_on
    if calibrated:
        strongly_typed = False
    builder_flags = []
    if not strongly_typed:
        compat.require("weak_precision_flags")
        if precision.fp16:
            builder_flags.append("FP16")
        if precision.qdq or calibrated:
            builder_flags.append("INT8")
    if calibrated:
        label = "int8-calib"
        if version.major >= 10:
            notes.append("implicit INT8 calibration is deprecated since TensorRT 10.1 and gone in 11; the Q/DQ ONNX "
                         "model is the portable INT8 artifact")
    else:
        label = precision.label
    if strongly_typed and label == "fp32":
        notes.append("the model is FP32 and TensorRT {} builds it strongly typed, as FP32; for FP16 build the FP16 "
                     "ONNX model (cli.py export --precision fp16)".format(version))
    if not strongly_typed and precision.source == "unknown":
        notes.append("could not read the model's precision (install onnx, or ship the bundle's model.onnx.json); "
                     "building without FP16/INT8 flags")
    if options.dla_core is not None:
        if label == "fp32":
            raise UserError("DLA runs FP16 and INT8 layers only; build the FP16 or Q/DQ ONNX model for --dla-core")
        if options.gpu_fallback:
            builder_flags.append("GPU_FALLBACK")
    if options.version_compatible:
        builder_flags.append("VERSION_COMPATIBLE")

    network_flags = []
    if compat.has("explicit_batch_flag"):
        network_flags.append("EXPLICIT_BATCH")
    if strongly_typed and compat.has("strongly_typed"):
        network_flags.append("STRONGLY_TYPED")
    return BuildPlan(str(compat.version_string), label, strongly_typed, network_flags, builder_flags, options, notes)


_TRTEXEC_FLAGS = {"FP16": "--fp16", "INT8": "--int8", "GPU_FALLBACK": "--allowGPUFallback",
                  "VERSION_COMPATIBLE": "--versionCompatible"}


def _shape_spec(profiles: Sequence[ShapeProfile], which: str) -> str:
    return ",".join("{}:{}".format(p.input_name, format_shape(getattr(p, which))) for p in profiles)


def trtexec_command(onnx_path: str, engine_path: str, plan: BuildPlan, profiles: Sequence[ShapeProfile],
                    trtexec: str = "trtexec") -> str:
    """The trtexec line that builds the same engine (trtexec's flag names per TensorRT version)."""
    options = plan.options
    args = [trtexec, "--onnx=" + onnx_path, "--saveEngine=" + engine_path]
    major = int(plan.trt_version.split(".")[0])
    if plan.strongly_typed and major == 10:  # 11.x dropped the flag: strong typing is always on
        args.append("--stronglyTyped")
    args += [_TRTEXEC_FLAGS[flag] for flag in plan.builder_flags if flag in _TRTEXEC_FLAGS]
    if options.calib_cache:
        args.append("--calib=" + options.calib_cache)
    if profiles:
        args += ["--{}Shapes={}".format(which, _shape_spec(profiles, which)) for which in ("min", "opt", "max")]
    if options.workspace_mib:
        args.append("--memPoolSize=workspace:{}".format(options.workspace_mib))  # MiB in 8.x and 10.x
    if options.timing_cache:
        args.append("--timingCacheFile=" + options.timing_cache)
    if options.dla_core is not None:
        args.append("--useDLACore={}".format(options.dla_core))
    if options.opt_level is not None:
        args.append("--builderOptimizationLevel={}".format(options.opt_level))
    if options.hardware_compatible:
        args.append("--hardwareCompatibilityLevel=ampere+")
    return " ".join(shlex.quote(arg) for arg in args)


def default_engine_path(onnx_path: str) -> str:
    base = onnx_path[:-5] if onnx_path.endswith(".onnx") else onnx_path
    return base + ".engine"


@dataclass
class BuildResult:
    engine_path: str
    sidecar_path: str
    trt_version: str
    device: Dict[str, object]
    precision: str
    strongly_typed: bool
    profiles: List[Dict[str, object]]
    layer_precisions: Dict[str, int]
    engine_size: int
    build_seconds: float
    trtexec: str
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def format_build_report(result: BuildResult) -> List[str]:
    device = result.device or {}
    where = device.get("name", "unknown GPU")
    if device.get("compute_capability"):
        where += " (sm {})".format(device["compute_capability"])
    if device.get("dla_core") is not None:
        where += ", DLA core {}".format(device["dla_core"])
    lines = ["wrote {} ({:.1f} MiB): TensorRT {}, {}{}, on {}, built in {:.1f} s".format(
        result.engine_path, result.engine_size / MIB, result.trt_version, result.precision,
        " (strongly typed)" if result.strongly_typed else "", where, result.build_seconds),
        "wrote {} (sidecar)".format(result.sidecar_path)]
    for profile in result.profiles:
        lines.append("profile {}: min {} opt {} max {}".format(profile["input"], format_shape(profile["min"]),
                                                               format_shape(profile["opt"]),
                                                               format_shape(profile["max"])))
    counts = ", ".join("{} {}".format(n, name) for name, n in result.layer_precisions.items() if n)
    lines.append("layers: {}".format(counts or "not reported by the engine inspector"))
    lines.append("equivalent trtexec: {}".format(result.trtexec))
    return lines


# -- the build itself (needs TensorRT) --------------------------------------------------------------------------

def _device_info(notes: List[str]):
    from .cuda import load_cuda_backend
    try:
        backend = load_cuda_backend()
        try:
            return backend.device_info()
        finally:
            backend.close()
    except UserError as exc:
        notes.append("could not name the GPU in the sidecar ({})".format(exc))
        return None


def _model_metadata(onnx_path: str, notes: List[str]) -> Dict[str, str]:
    from ..metadata import read_onnx_metadata
    try:
        return read_onnx_metadata(onnx_path)
    except UserError as exc:
        notes.append("no model metadata in the sidecar ({}); deploy.infer needs it to preprocess".format(exc))
        return {}


def _parse(trt, compat: TrtCompat, network, logger, onnx_path: str):
    """Parse into ``network``. The parser and the model bytes must outlive the build (the weights live there)."""
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as handle:
        model_bytes = handle.read()
    ok = parser.parse(model_bytes, onnx_path)  # the path resolves external weights
    issues = compat.parser_issues(parser)
    if not ok or issues:
        details = "; ".join(str(issue) for issue in issues) or "no details given"
        raise UserError("TensorRT {}'s ONNX parser rejected {}: {}".format(compat.version_string, onnx_path, details))
    return parser, model_bytes


def _network_inputs(network) -> Dict[str, tuple]:
    return {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}


def _network_tensor_names(network) -> List[str]:
    names = list(_network_inputs(network))
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        names += [layer.get_output(j).name for j in range(layer.num_outputs)]
    return names


def _configure(trt, compat: TrtCompat, builder, network, plan: BuildPlan, profiles, calibration, notes):
    config = builder.create_builder_config()
    options = plan.options
    for flag in plan.builder_flags:
        compat.set_builder_flag(config, flag)
    if options.workspace_mib:
        compat.set_workspace(config, options.workspace_mib * MIB)
    if options.opt_level is not None:
        compat.set_opt_level(config, options.opt_level)
    if options.hardware_compatible:
        compat.set_hardware_compatible(config)
    if options.dla_core is not None:
        compat.set_dla(config, options.dla_core, gpu_fallback=False)  # GPU_FALLBACK is among the builder flags
    compat.set_detailed_profiling(config)
    profile = None
    if profiles:
        profile = builder.create_optimization_profile()
        for shapes in profiles:
            profile.set_shape(shapes.input_name, shapes.min, shapes.opt, shapes.max)
        if config.add_optimization_profile(profile) < 0:
            raise UserError("TensorRT rejected the optimization profile {}".format([p.to_dict() for p in profiles]))
    if options.timing_cache:
        data = b""
        if os.path.isfile(options.timing_cache):
            with open(options.timing_cache, "rb") as handle:
                data = handle.read()
        if not compat.set_timing_cache(config, data) and data:
            notes.append("timing cache {} is from another GPU or TensorRT version; started a new one".format(
                options.timing_cache))
    calibrator = None
    if calibration is not None:
        from .calibrator import check_cache_covers_network, make_cache_calibrator
        notes.extend(check_cache_covers_network(calibration, _network_tensor_names(network)))
        calibrator = make_cache_calibrator(trt, calibration)
        compat.set_calibrator(config, calibrator, profile)
    return config, calibrator


def _inspect(trt, compat: TrtCompat, logger, engine_bytes: bytes, plan: BuildPlan, profiles) -> Dict[str, int]:
    runtime = trt.Runtime(logger)
    if plan.options.version_compatible:
        compat.allow_engine_host_code(runtime)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise CheckFailedError("TensorRT built an engine it cannot load back: {}".format(
            "; ".join(logger.errors[-3:]) or "no details"))
    context, information = None, None
    try:
        if profiles:
            context = engine.create_execution_context()
            for shapes in profiles:
                compat.set_input_shape(context, shapes.input_name, shapes.opt)
        information = compat.engine_information(engine, context)
    except Exception:  # noqa: BLE001 (an inspector that fails must not fail a good build; the counts say "unknown")
        information = None
    del context, engine, runtime
    return summarize_layer_precisions(information)


def _check_precision(plan: BuildPlan, counts: Dict[str, int], calibrator, logger, notes: List[str]) -> None:
    """A build that silently lost its INT8 scales must not pass for an INT8 engine."""
    cache = plan.options.calib_cache
    if calibrator is not None and calibrator.batches_requested:
        raise CheckFailedError("TensorRT did not accept the calibration cache {} (it asked for calibration data "
                               "instead), so the INT8 layers would have no real scales".format(cache))
    if cache and logger.missing_scales:
        raise CheckFailedError("TensorRT used default quantization params for {} tensors although {} was given, "
                               "e.g. {!r}".format(len(logger.missing_scales), cache, logger.missing_scales[0]))
    if known_layers(counts) == 0:
        notes.append("the engine inspector reported no per-layer formats, so the layer precisions are unchecked")
        return
    if plan.expects_int8 and counts.get("int8", 0) == 0:
        raise CheckFailedError("the {} engine has no INT8 layers ({}); TensorRT ignored the {}".format(
            plan.precision, counts, "calibration cache" if cache else "Q/DQ nodes"))
    if plan.precision == "fp16" and counts.get("fp16", 0) == 0:
        notes.append("no layer runs in FP16 ({}); TensorRT chose FP32 kernels".format(counts))


def build_engine(onnx_path, output: Optional[str] = None, options: Optional[BuildOptions] = None,
                 log_stream=None, log=None) -> BuildResult:
    """Build ``onnx_path`` into a plain engine file plus its sidecar; returns what was built and checked.

    ``log`` (a callable taking one line) hears when the long part starts; TensorRT's own warnings and errors go
    to ``log_stream`` (stderr by default).
    """
    options = (options or BuildOptions()).validate()
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise UserError("no such model file: {}".format(onnx_path))
    output = os.fspath(output) if output else default_engine_path(onnx_path)
    if os.path.abspath(output) == os.path.abspath(onnx_path):
        raise UserError("the engine would overwrite its ONNX model {}".format(onnx_path))

    trt = import_tensorrt("build TensorRT engines")
    compat = TrtCompat(trt)
    plan = plan_build(compat, options, inspect_onnx(onnx_path).precision)
    notes = list(plan.notes)
    calibration = None
    if options.calib_cache:
        from .calibrator import check_calibration_cache
        calibration = check_calibration_cache(options.calib_cache, compat.version)
    metadata = _model_metadata(onnx_path, notes)
    device = _device_info(notes)

    logger = make_logger(trt, stream=log_stream)
    builder = trt.Builder(logger)
    network = builder.create_network(compat.network_flags(plan.strongly_typed))
    parser, model_bytes = _parse(trt, compat, network, logger, onnx_path)
    profiles = resolve_profiles(_network_inputs(network), options.min_batch, options.opt_batch, options.max_batch)
    config, calibrator = _configure(trt, compat, builder, network, plan, profiles, calibration, notes)
    trtexec = trtexec_command(onnx_path, output, plan, profiles)

    if log is not None:
        log("building {} with TensorRT {} ({}); this can take minutes".format(output, compat.version_string,
                                                                             plan.precision))
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - started
    del parser, model_bytes
    if serialized is None:
        raise CheckFailedError("TensorRT could not build {}: {}".format(
            onnx_path, "; ".join(logger.errors[-3:]) or "see the TensorRT log above"))
    engine_bytes = bytes(serialized)
    counts = _inspect(trt, compat, logger, engine_bytes, plan, profiles)
    _check_precision(plan, counts, calibrator, logger, notes)

    write_bytes(output, engine_bytes)
    if options.timing_cache:
        cache = compat.serialized_timing_cache(config)
        if cache:
            write_bytes(options.timing_cache, cache)
    profile_dicts = [p.to_dict() for p in profiles]
    from .sidecar import make_sidecar
    sidecar = make_sidecar(
        engine_path=output, engine_size=len(engine_bytes), trt_version=compat.version_string, device=device,
        dla_core=options.dla_core, precision=plan.precision, strongly_typed=plan.strongly_typed,
        profiles=profile_dicts, build_options=options.to_dict(), metadata=metadata, onnx_path=onnx_path,
        onnx_sha256=sha256_file(onnx_path), layer_precisions=counts,
        calibration=calibration.to_dict() if calibration else None, trtexec=trtexec, notes=notes)
    write_json(sidecar_path(output), sidecar)
    return BuildResult(output, sidecar_path(output), compat.version_string, sidecar["device"], plan.precision,
                       plan.strongly_typed, profile_dicts, counts, len(engine_bytes), build_seconds, trtexec, notes)


def planned_trtexec(onnx_path: str, engine_path: str, trt_version: str, options: Optional[BuildOptions] = None,
                    trtexec: str = "trtexec") -> str:
    """The trtexec line for a TensorRT version that is not installed here (for bundles built elsewhere)."""
    options = options or BuildOptions()
    info = inspect_onnx(onnx_path)
    plan = plan_build(TrtCompat.for_version(trt_version), options, info.precision)
    profiles = resolve_profiles(info.inputs, options.min_batch, options.opt_batch, options.max_batch)
    return trtexec_command(os.path.basename(onnx_path), os.path.basename(engine_path), plan, profiles, trtexec)
