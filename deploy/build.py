"""Build a TensorRT engine on the device that will run it: ``python3 -m deploy.build MODEL.onnx [-o OUT.engine]``.

The target-side twin of ``cli.py build`` (which needs click and the rest of the project); both call
``deploy.trt.build.run_build`` with the same options. Engines are tied to a TensorRT version and a GPU, so a
Jetson builds its own from the bundled ONNX model. ``--dry-run`` prints the plan without TensorRT.
"""
import argparse
import json
import sys
from typing import List, Optional

from .cliutil import add_build_options, note, run_main


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.build", description=__doc__.split("\n\n")[0],
        epilog="Precision comes from the model (FP32, FP16 or Q/DQ INT8 ONNX); the engine's file name, sidecar and "
               "--json name it. The engine is written plain (trtexec loads it) with a JSON sidecar beside it.")
    parser.add_argument("model", metavar="MODEL.onnx", help="ONNX model exported by cli.py export/calibrate")
    parser.add_argument("-o", "--output", metavar="OUT.engine", help="default: MODEL.<precision>.engine")
    add_build_options(parser)
    parser.add_argument("--json", action="store_true", help="print the build report (or plan) as JSON on stdout")
    return parser


def run(args: argparse.Namespace) -> int:
    from .trt.build import run_build

    payload, lines = run_build(args.model, args.output, vars(args), log=note)
    print(json.dumps(payload, indent=2, sort_keys=True) if args.json else "\n".join(lines))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
