"""What a build will do, decided without TensorRT: options, the honest precision and flags per TensorRT version,
and the equivalent trtexec and polygraphy lines. ``deploy.build --dry-run``, ``eca-deploy build --dry-run`` and the
bundle's build script print this one plan, so they cannot disagree. Every model is first checked against what the
target TensorRT's ONNX parser documents (``conformance``), so no plan holds a model the device would refuse.
``build_rules_table`` writes the per-version table of docs/TENSORRT_CONFORMANCE.md from the same rules.
"""
import os
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import UserError
from ..metadata import sidecar_path
from ..validate import MAX_BATCH, MAX_WORKSPACE_MIB, check_bound, check_outputs_spare_inputs
from ..onnx_info import OnnxPrecision, inspect_onnx
from .conformance import check_conformance, int8_weights_note_for
from ..runners.execution import DEFAULT_MAX_BATCH
from .profiles import ShapeProfile, format_shape, resolve_batch_range, resolve_profiles
from .version import DEFAULT_TARGET, TrtVersion

PRECISIONS = ("fp32", "fp16", "int8", "int8-implicit")
MIB = 1 << 20


@dataclass(frozen=True)
class CliOption:
    """One build option, declared once for both fronts (argparse in deploy.build, click in eca-deploy build)."""

    flag: str
    dest: str
    kind: str  # "int", "path", "flag", "text" or "choice"
    help: str
    metavar: Optional[str] = None
    choices: Tuple[str, ...] = ()


BUILD_CLI_OPTIONS = (
    CliOption("--precision", "precision", "choice", "Engine precision (default: the model's own: fp32, fp16 or "
              "int8 for a Q/DQ model). fp16 on an FP32 model needs TensorRT 8.x/10.x.", choices=PRECISIONS[:3]),
    CliOption("--implicit-int8", "implicit_int8", "flag", "Legacy implicit INT8 from --calib-cache (TensorRT "
              "8.5-10.x); the engine is named int8-implicit."),
    CliOption("--calib-cache", "calib_cache", "path", "Calibration cache for --implicit-int8.", "FILE"),
    CliOption("--min-batch", "min_batch", "int", "Smallest batch of the optimization profile (default 1; batches "
              "at most {}).".format(MAX_BATCH), "N"),
    CliOption("--opt-batch", "opt_batch", "int", "Batch TensorRT tunes for (default: the min batch).", "N"),
    CliOption("--max-batch", "max_batch", "int", "Largest batch of the optimization profile (default {}, at most "
              "{}).".format(DEFAULT_MAX_BATCH, MAX_BATCH), "N"),
    CliOption("--workspace", "workspace_mib", "int", "Builder workspace limit in MiB (default: TensorRT's; at most "
              "{}).".format(MAX_WORKSPACE_MIB), "MIB"),
    CliOption("--timing-cache", "timing_cache", "path", "Read, and update, this timing cache file.", "FILE"),
    CliOption("--dla-core", "dla_core", "int", "Build for this DLA core (Jetson; FP16/INT8 engines).", "N"),
    CliOption("--gpu-fallback", "gpu_fallback", "flag", "With --dla-core: run layers DLA lacks on the GPU."),
    CliOption("--opt-level", "opt_level", "int", "Builder optimization level 0-5 (TensorRT 8.6+).", "0-5"),
    CliOption("--version-compatible", "version_compatible", "flag",
              "Engine also loads on later TensorRT versions (8.6+)."),
    CliOption("--hardware-compatible", "hardware_compatible", "flag",
              "Engine runs on any Ampere-or-newer GPU (8.6+)."),
    CliOption("--dry-run", "dry_run", "flag", "Print the build plan (flags, trtexec and polygraphy lines) and build "
              "nothing; works without TensorRT."),
    CliOption("--trt-version", "trt_version", "text", "TensorRT version to plan for in --dry-run (default: the "
              "installed one, else {} as on JetPack 6.1/6.2; minor and patch below 100).".format(DEFAULT_TARGET), "X.Y[.Z]"),
)


@dataclass
class BuildOptions:
    precision: Optional[str] = None
    implicit_int8: bool = False
    calib_cache: Optional[str] = None
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

    @classmethod
    def from_mapping(cls, values: Dict[str, object]) -> "BuildOptions":
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in values.items() if key in known})

    def validate(self, check_files: bool = True) -> "BuildOptions":
        """Checks that need no TensorRT, so a typo fails before a slow import or a long build."""
        if any(v is not None for v in (self.min_batch, self.opt_batch, self.max_batch)):
            resolve_batch_range(self.min_batch, self.opt_batch, self.max_batch)
        if self.precision is not None and self.precision not in PRECISIONS[:3]:
            raise UserError("--precision must be one of {}, got {!r} (implicit INT8 is --implicit-int8)".format(
                ", ".join(PRECISIONS[:3]), self.precision))
        if self.implicit_int8 and not self.calib_cache:
            raise UserError("--implicit-int8 needs --calib-cache FILE (the scales TensorRT should use)")
        if self.calib_cache and not self.implicit_int8:
            raise UserError("--calib-cache is only for --implicit-int8; the Q/DQ ONNX model carries its own scales")
        if self.implicit_int8 and self.precision not in (None, "int8"):
            raise UserError("--implicit-int8 builds INT8; leave out --precision {}".format(self.precision))
        if check_files and self.calib_cache and not os.path.isfile(self.calib_cache):
            raise UserError("no such calibration cache: {}".format(self.calib_cache))
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise UserError("--workspace must be a positive number of MiB, got {}".format(self.workspace_mib))
        check_bound("--workspace", self.workspace_mib, MAX_WORKSPACE_MIB)
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise UserError("--opt-level must be between 0 and 5, got {}".format(self.opt_level))
        if self.dla_core is not None and self.dla_core < 0:
            raise UserError("--dla-core must be 0 or more, got {}".format(self.dla_core))
        if self.gpu_fallback and self.dla_core is None:
            raise UserError("--gpu-fallback only applies together with --dla-core")
        return self

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


@dataclass
class BuildPlan:
    """One engine to build: from which ONNX, to which file, in which precision, with which TensorRT settings."""

    onnx: str
    engine: str
    precision: str
    trt_version: str
    strongly_typed: bool
    fp16: bool  # BuilderFlag.FP16 (weak typing only)
    int8: bool  # BuilderFlag.INT8 (weak typing only)
    profiles: List[ShapeProfile]
    options: BuildOptions
    notes: List[str] = field(default_factory=list)

    @property
    def version(self) -> TrtVersion:
        return TrtVersion.parse(self.trt_version)

    @property
    def float_layers(self) -> Optional[str]:
        """How this Q/DQ engine runs the layers left in float (None for other precisions)."""
        return qdq_float_layers(self.version, self.options.dla_core is not None) if self.precision == "int8" else None

    @property
    def trt_flags(self) -> List[str]:
        """Network and builder flags by their TensorRT names."""
        flags = ["STRONGLY_TYPED"] if self.strongly_typed else []
        flags += [name for name, on in (("FP16", self.fp16), ("INT8", self.int8)) if on]
        if self.options.dla_core is not None and self.options.gpu_fallback:
            flags.append("GPU_FALLBACK")
        if self.options.version_compatible:
            flags.append("VERSION_COMPATIBLE")
        return flags

    def to_dict(self) -> Dict[str, object]:
        return {"onnx": self.onnx, "engine": self.engine, "precision": self.precision,
                "trt_flags": self.trt_flags, "trt_version": self.trt_version, "strongly_typed": self.strongly_typed,
                "profiles": [p.to_dict() for p in self.profiles], "trtexec": trtexec_command(self),
                "polygraphy": polygraphy_command(self), "polygraphy_run": polygraphy_run_command(self),
                "float_layers": self.float_layers, "notes": list(self.notes)}


def qdq_float_layers(version, dla: bool = False) -> str:
    """The one statement of how a Q/DQ model's float layers run on ``version``; the dry run, build_engines.sh and
    the docs' table all print it. Float layers run as the CPU proof measured them (FP32), on every version:
    8.x builds weakly typed with the INT8 flag alone (no FP16 flag, so the builder keeps them in FP32); 10.x builds
    strongly typed, as 11.x must (the ONNX types decide). Sources: the TensorRT developer guide ("Explicit
    Quantization", "Strongly Typed Networks"), the 10.12.0 release notes (weak typing deprecated) and "Migrating
    from TensorRT 10.x to 11.x" (weak typing removed)."""
    version = TrtVersion.parse(version)
    if dla and version.has_dla:
        return ("weakly typed with the INT8 and FP16 flags, for DLA (it runs INT8 and FP16 layers only): layers "
                "without Q/DQ run in FP16, not in the FP32 the CPU proof measured")
    if not version.has_weak_typing:
        return ("strongly typed (11.x has no other mode): layers without Q/DQ run in the ONNX model's float type, "
                "FP32 for eca-deploy calibrate's models")
    if version.has_strongly_typed_flag:
        return ("strongly typed: layers without Q/DQ run in the ONNX model's float type, FP32 for eca-deploy calibrate's "
                "models (a weakly typed --int8 --fp16 build would run them in FP16)")
    return ("weakly typed with the INT8 flag alone: layers without Q/DQ run in FP32 (the FP16 flag, which would "
            "let them run in FP16, is not set)")


def resolve_precision(version: TrtVersion, options: BuildOptions, model: OnnxPrecision):
    """(precision, strongly_typed, fp16 flag, int8 flag, notes): the documented way on this version, or UserError.

    Weakly typed flags where they exist and are needed; a strongly typed network where the ONNX types alone are
    the precision (10.x), and always on 11.x (no FP16/INT8 flags, no calibrators). A Q/DQ model's float layers
    stay in FP32 everywhere (``qdq_float_layers``).
    """
    own = model.label
    wanted = "int8-implicit" if options.implicit_int8 else (options.precision or own)
    if model.qdq and wanted != "int8":
        raise UserError("the model has Q/DQ nodes, so it builds as int8 only; build the FP32 or FP16 ONNX model for "
                        "{}".format(wanted))
    if own == "fp16" and wanted in ("fp32", "int8-implicit"):
        raise UserError("the model is FP16; build the FP32 ONNX model for {}".format(wanted))
    if wanted == "int8" and not model.qdq:
        raise UserError("int8 engines are built from the Q/DQ ONNX model (eca-deploy calibrate); legacy implicit INT8 "
                        "is --implicit-int8 --calib-cache FILE (TensorRT 8.5-10.x)")
    weak = version.has_weak_typing
    if wanted == "int8-implicit":
        if not version.has_implicit_int8:
            raise UserError("implicit INT8 from a calibration cache was removed in TensorRT 11.0; this plan is for "
                            "TensorRT {} (build the Q/DQ ONNX model instead)".format(version))
        notes = ["implicit INT8 calibration is deprecated since TensorRT 10.1 and gone in 11; the Q/DQ ONNX model "
                 "is the portable INT8 artifact"] if version.major >= 10 else []
        return wanted, False, False, True, notes
    if wanted == "fp16" and own == "fp32" and not weak:
        raise UserError("TensorRT {} has no FP16 builder flag (removed in 11.0): build the FP16 ONNX model "
                        "(eca-deploy export --precision fp16)".format(version))
    if wanted == "int8":  # explicit quantization: Q/DQ says where INT8 runs, qdq_float_layers says the rest
        if options.dla_core is not None and weak:  # DLA has no FP32 layers: the float ones need the FP16 flag
            return wanted, False, True, True, []
        strongly_typed = version.has_strongly_typed_flag or not weak
        return wanted, strongly_typed, False, not strongly_typed, []
    if wanted == "fp16" and (own == "fp32" or weak and not version.has_strongly_typed_flag):
        return wanted, False, True, False, []
    return wanted, not weak or version.has_strongly_typed_flag, False, False, []  # the ONNX types are the precision


# The docs' table: one column per TensorRT line users run, one row per model and requested engine.
TABLE_VERSIONS = (("TensorRT 8.5 / 8.6 (JetPack 5.1 / 6.0)", "8.6.2"), ("TensorRT 10.x (10.3: JetPack 6.1/6.2)",
                                                                       "10.3.0"), ("TensorRT 11.x", "11.4.0"))
TABLE_ROWS = (
    ("FP32 ONNX → `fp32`", OnnxPrecision(), {}),
    ("FP32 ONNX → `fp16`", OnnxPrecision(), {"precision": "fp16"}),
    ("FP16 ONNX → `fp16`", OnnxPrecision(fp16=True), {}),
    ("Q/DQ ONNX → `int8`", OnnxPrecision(qdq=True), {}),
    ("FP32 ONNX + cache → `int8-implicit`", OnnxPrecision(), {"implicit_int8": True, "calib_cache": "CACHE"}),
)


def build_rules_table() -> str:
    """The markdown table of what each TensorRT version gets, from ``resolve_precision`` and
    ``qdq_float_layers`` themselves (docs/TENSORRT_CONFORMANCE.md holds its output; a test keeps them equal)."""
    lines = ["| model → engine | {} |".format(" | ".join(name for name, _ in TABLE_VERSIONS)),
             "|---|{}".format("---|" * len(TABLE_VERSIONS))]
    for label, model, values in TABLE_ROWS:
        cells = [_table_cell(TrtVersion.parse(version), BuildOptions(**values), model) for _, version in TABLE_VERSIONS]
        lines.append("| {} | {} |".format(label, " | ".join(cells)))
    return "\n".join(lines)


def _table_cell(version: TrtVersion, options: BuildOptions, model: OnnxPrecision) -> str:
    try:
        _, strongly_typed, fp16, int8, _ = resolve_precision(version, options, model)
    except UserError as exc:
        return "refused: {}".format(exc)
    if model.qdq:
        return qdq_float_layers(version)  # it names the typing and the flags
    flags = [name for name, on in (("FP16", fp16), ("INT8", int8)) if on]
    cell = "strongly typed" if strongly_typed else "weakly typed, {}".format(
        " + ".join("`{}` flag".format(f) for f in flags) or "no flags")
    return cell + (" + calibrator" if options.implicit_int8 else "")


def check_version_options(version: TrtVersion, options: BuildOptions) -> None:
    if not version.supported:
        raise UserError("TensorRT {} is too old: this tool needs 8.5 or newer (JetPack 5.1)".format(version))
    for enabled, name in ((options.version_compatible, "--version-compatible"),
                          (options.hardware_compatible, "--hardware-compatible"),
                          (options.opt_level is not None, "--opt-level")):
        if enabled and not version.has_compatibility_options:
            raise UserError("{} needs TensorRT 8.6 or newer; this plan is for TensorRT {}".format(name, version))
    if options.dla_core is not None and not version.has_dla:
        raise UserError("DLA (--dla-core) is a JetPack feature of TensorRT 8.x and 10.x; this plan is for TensorRT "
                        "{}".format(version))


_PRECISION_TAG = re.compile(r"(?:^|[._-])(fp32|fp16|int8(?:-implicit)?)(?=[._-]|$)")


def default_engine_path(onnx_path: str, precision: str) -> str:
    """MODEL.<precision>.engine beside the model, so the name says the precision."""
    base = onnx_path[:-5] if onnx_path.endswith(".onnx") else onnx_path
    named = [match.group(1) for match in _PRECISION_TAG.finditer(os.path.basename(base))]
    if named and named[-1] == precision:  # model.fp16.onnx -> model.fp16.engine, m.int8.tensorrt -> m.int8.tensorrt
        return base + ".engine"
    return "{}.{}.engine".format(base, precision)


def check_engine_name(engine_path: str, precision: str) -> None:
    """An engine named for another precision would lie; refuse it."""
    stem = os.path.basename(engine_path).rsplit(".", 1)[0]
    named = [match.group(1) for match in _PRECISION_TAG.finditer(stem)]
    if named and named[-1] != precision:
        raise UserError("{} is named {} but the engine will be {}; name it for its precision (e.g. {})".format(
            engine_path, named[-1], precision, default_engine_path("MODEL.onnx", precision)))


def plan_build(onnx_path: str, output: Optional[str], trt_version: str,
               options: Optional[BuildOptions] = None, check_files: bool = True) -> BuildPlan:
    """The plan for one engine: read the model's precision and inputs, then decide what this version does."""
    options = (options or BuildOptions()).validate(check_files)
    onnx_path = os.fspath(onnx_path)
    if check_files and not os.path.isfile(onnx_path):
        raise UserError("no such model file: {}".format(onnx_path))
    version = TrtVersion.parse(trt_version)
    check_version_options(version, options)
    unchecked = check_conformance(onnx_path, version)  # UserError (one line) for what the parser would refuse
    info = inspect_onnx(onnx_path)
    precision, strongly_typed, fp16, int8, notes = resolve_precision(version, options, info.precision)
    if options.implicit_int8 and check_files:  # a cache stamped for another TensorRT would be skipped silently
        from .calibrator import check_calibration_cache
        check_calibration_cache(options.calib_cache, version)
    if options.dla_core is not None and precision == "fp32":
        raise UserError("DLA runs FP16 and INT8 layers only; build the FP16 or Q/DQ ONNX model for --dla-core")
    if options.dla_core:
        notes.append("the polygraphy line builds for DLA core 0: its command line has no core option")
    if unchecked:
        notes.append(unchecked)
    if precision == "int8" and not options.implicit_int8:  # INT8 weights where the release's documents are silent
        weights_note = int8_weights_note_for(onnx_path, version)
        notes += [weights_note] if weights_note else []
    if info.precision.source == "unknown":
        notes.append("could not read the model's precision (install onnx, or ship the bundle's model.onnx.json); "
                     "planned it as fp32")
    engine = os.fspath(output) if output else default_engine_path(onnx_path, precision)
    check_engine_name(engine, precision)
    check_outputs_spare_inputs([("engine", engine), ("sidecar", sidecar_path(engine))],
                               [("MODEL", onnx_path), ("--calib-cache", options.calib_cache),
                                ("--timing-cache", options.timing_cache)])
    # the timing cache is read and then rewritten: an output too, though not of the engine's
    check_outputs_spare_inputs([("--timing-cache", options.timing_cache)],
                               [("MODEL", onnx_path), ("--calib-cache", options.calib_cache)])
    profiles = resolve_profiles(info.inputs, options.min_batch, options.opt_batch, options.max_batch)
    return BuildPlan(onnx_path, engine, precision, str(version), strongly_typed, fp16, int8, profiles, options, notes)


# -- the equivalent command lines -------------------------------------------------------------------------------

# (option, trtexec spelling, Polygraphy CLI spelling); {} is the value. trtexec's memPoolSize unit is MiB.
_SPELLINGS = (
    ("workspace_mib", ["--memPoolSize=workspace:{}"], ["--pool-limit", "workspace:{}M"]),
    ("timing_cache", ["--timingCacheFile={}"], ["--load-timing-cache", "{}", "--save-timing-cache", "{}"]),
    ("dla_core", ["--useDLACore={}"], ["--use-dla"]),  # Polygraphy's CLI always uses DLA core 0
    ("gpu_fallback", ["--allowGPUFallback"], ["--allow-gpu-fallback"]),
    ("opt_level", ["--builderOptimizationLevel={}"], ["--builder-optimization-level", "{}"]),
    ("version_compatible", ["--versionCompatible"], ["--version-compatible"]),
    ("hardware_compatible", ["--hardwareCompatibilityLevel=ampere+"],
     ["--hardware-compatibility-level", "ampere_plus"]),
)
# How far ``polygraphy run`` may let TensorRT differ from ONNX Runtime (its 1e-5 default is for FP32).
RUN_TOLERANCE = {"fp32": "1e-3", "fp16": "1e-2", "int8": "1e-1", "int8-implicit": "1e-1"}


def _tool_args(plan: BuildPlan, polygraphy: bool, name) -> List[str]:
    options, args = plan.options, []
    if plan.strongly_typed and plan.version.has_strongly_typed_flag:
        args.append("--strongly-typed" if polygraphy else "--stronglyTyped")
    if not polygraphy and plan.version.has_weak_typing:
        args.append("--noTF32")  # Polygraphy clears TF32 by default; trtexec would enable it
    args += [flag for flag, on in (("--fp16", plan.fp16), ("--int8", plan.int8)) if on]
    if options.calib_cache:
        args += ["--calibration-cache", name(options.calib_cache)] if polygraphy else ["--calib=" + name(
            options.calib_cache)]
    for which in ("min", "opt", "max") if plan.profiles else ():
        shapes = [(p.input_name, getattr(p, which)) for p in plan.profiles]
        if polygraphy:
            args += ["--trt-{}-shapes".format(which)] + ["{}:[{}]".format(n, ",".join(map(str, s))) for n, s in shapes]
        else:
            args.append("--{}Shapes={}".format(which, ",".join("{}:{}".format(n, format_shape(s)) for n, s in shapes)))
    for key, trtexec, polygraphy_cli in _SPELLINGS:
        value = getattr(options, key)
        if value is not None and value is not False:
            value = name(value) if key == "timing_cache" else value
            args += [part.format(value) for part in (polygraphy_cli if polygraphy else trtexec)]
    return args


def trtexec_command(plan: BuildPlan, trtexec: str = "trtexec", relative: bool = False) -> str:
    """The trtexec line that builds the same engine (trtexec's flag names for this TensorRT version)."""
    name = os.path.basename if relative else str
    return _quote([trtexec, "--onnx=" + name(plan.onnx), "--saveEngine=" + name(plan.engine)]
                  + _tool_args(plan, False, name))


def polygraphy_command(plan: BuildPlan, relative: bool = False) -> str:
    """The ``polygraphy convert`` line for the same engine (the console script makes the same Polygraphy calls)."""
    name = os.path.basename if relative else str
    return _quote(["polygraphy", "convert", name(plan.onnx), "--convert-to", "trt", "-o", name(plan.engine)]
                  + _tool_args(plan, True, name))


def polygraphy_run_command(plan: BuildPlan, relative: bool = False) -> str:
    """``polygraphy run``: the same build against ONNX Runtime on random inputs, to bisect a mismatch."""
    name, tolerance = (os.path.basename if relative else str), RUN_TOLERANCE[plan.precision]
    return _quote(["polygraphy", "run", name(plan.onnx), "--trt"] + _tool_args(plan, True, name)
                  + ["--onnxrt", "--atol", tolerance, "--rtol", tolerance])


def _quote(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(arg)) for arg in args)


def add_build_options(parser) -> None:
    """The build options of BUILD_CLI_OPTIONS on an argparse parser."""
    for option in BUILD_CLI_OPTIONS:
        if option.kind == "flag":
            parser.add_argument(option.flag, dest=option.dest, action="store_true", help=option.help)
        elif option.kind == "choice":
            parser.add_argument(option.flag, dest=option.dest, choices=option.choices, help=option.help)
        else:
            parser.add_argument(option.flag, dest=option.dest, type=int if option.kind == "int" else str,
                                metavar=option.metavar, help=option.help)
