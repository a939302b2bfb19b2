"""Build a TensorRT engine on the device that will run it: ``python3 -m deploy.build MODEL.onnx [-o OUT.engine]``.

The target-side twin of ``eca-deploy build`` (which needs click and the rest of the project); both call
``run_build`` below with the same options. Engines are tied to a TensorRT version and a GPU, so a
Jetson builds its own from the bundled ONNX model. ``--dry-run`` prints the plan without TensorRT.
"""
import argparse
import json
import sys
from typing import Dict, List, Optional

from .cliutil import note, run_main


def run_build(model: str, output: Optional[str], values: Dict[str, object], log=None):
    """What both fronts (eca-deploy build, python -m deploy.build) do: (JSON payload, text lines)."""
    from .errors import UserError
    from .metadata import read_model_info
    from .trt.build import build_engine, dry_run
    from .trt.plan import BuildOptions

    options = BuildOptions.from_mapping(values)
    if str(model).endswith(".onnx"):  # the one model check: what deploy.infer could not run is not planned
        read_model_info(model)
    if values.get("dry_run"):
        plan = dry_run(model, output, options, values.get("trt_version"))
        return {"dry_run": True, "engines": [plan.to_dict()]}, format_plan([plan])
    if values.get("trt_version"):
        raise UserError("--trt-version only applies to --dry-run; a build uses the installed TensorRT")
    result = build_engine(model, output, options, log=log)
    for message in result.notes if log is not None else ():
        log(message)
    return result.to_dict(), format_build_report(result)


def format_build_report(result) -> List[str]:
    """A deploy.trt.build.BuildResult, as text."""
    from .trt.profiles import format_shape

    device = result.device or {}
    where = device.get("name", "unknown GPU")
    if device.get("compute_capability"):
        where += " (sm {})".format(device["compute_capability"])
    if device.get("dla_core") is not None:
        where += ", DLA core {}".format(device["dla_core"])
    lines = ["wrote {} ({:.1f} MiB): TensorRT {}, {} [{}], on {}, built in {:.1f} s".format(
        result.engine_path, result.engine_size / float(1 << 20), result.trt_version, result.precision,
        " ".join(result.trt_flags) or "no flags", where, result.build_seconds),
        "wrote {} (sidecar)".format(result.sidecar_path)]
    for p in result.profiles:
        lines.append("profile {}: min {} opt {} max {}".format(
            p["input"], format_shape(p["min"]), format_shape(p["opt"]), format_shape(p["max"])))
    counts = ", ".join("{} {}".format(n, name) for name, n in result.layer_precisions.items() if n)
    lines.append("layers: {}".format(counts or "not reported by the engine inspector"))
    lines.append("equivalent trtexec: {}".format(result.trtexec))
    lines.append("equivalent polygraphy: {}".format(result.polygraphy))
    return lines


def format_plan(plans) -> List[str]:
    """The dry run (deploy.trt.plan.BuildPlan objects), as text: one block per engine."""
    lines = []
    for plan in plans:
        lines += ["{} -> {}: {} on TensorRT {} [{}]".format(plan.onnx, plan.engine, plan.precision, plan.trt_version,
                                                          " ".join(plan.trt_flags) or "no flags")]
        lines += ["  float layers: " + plan.float_layers] if plan.float_layers else []
        lines += ["  trtexec: " + plan.to_dict()["trtexec"], "  polygraphy: " + plan.to_dict()["polygraphy"]]
        lines += ["  note: " + text for text in plan.notes]
    return lines


def make_parser() -> argparse.ArgumentParser:
    from .trt.plan import add_build_options
    parser = argparse.ArgumentParser(
        prog="python -m deploy.build", description=__doc__.split("\n\n")[0],
        epilog="Precision comes from the model (FP32, FP16 or Q/DQ INT8 ONNX); the engine's file name, sidecar and "
               "--json name it. The engine is written plain (trtexec loads it) with a JSON sidecar beside it.")
    parser.add_argument("model", metavar="MODEL.onnx", help="ONNX model exported by eca-deploy export/calibrate")
    parser.add_argument("-o", "--output", metavar="OUT.engine", help="default: MODEL.<precision>.engine")
    add_build_options(parser)
    parser.add_argument("--json", action="store_true", help="print the build report (or plan) as JSON on stdout")
    return parser


def run(args: argparse.Namespace) -> int:
    payload, lines = run_build(args.model, args.output, vars(args), log=note)
    print(json.dumps(payload, indent=2, sort_keys=True) if args.json else "\n".join(lines))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
