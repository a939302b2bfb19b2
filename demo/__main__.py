"""`python -m demo [--out DIR] [--threads N] [--force] [--json]`: what `make demo` runs (see demo.run)."""
import argparse
import json
import sys
import time

from deploy.cliutil import run_main
from deploy.progress import bars_allowed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--out", default="out/demo", help="Output folder (default: out/demo).")
    parser.add_argument("--threads", type=int, help="CPU threads for every backend (default: all cores).")
    parser.add_argument("--force", action="store_true", help="Rerun every step, even when unchanged.")
    parser.add_argument("--json", dest="as_json", action="store_true", help="Print machine-readable JSON on stdout.")
    args = parser.parse_args(argv)

    def body() -> int:
        from .run import run_demo

        started = time.perf_counter()
        # Step lines go to stderr with --json, so stdout stays one JSON document.
        stream = sys.stderr if args.as_json else sys.stdout
        path, results = run_demo(args.out, echo=lambda line: print(line, file=stream, flush=True),
                                 progress=bars_allowed(not args.as_json), threads=args.threads, force=args.force)
        if args.as_json:
            print(json.dumps({"report": path, "runs": [r.to_dict() for r in results],
                              "seconds": time.perf_counter() - started}, indent=2, sort_keys=True, default=str))
        else:
            print("demo report: {} ({:.0f} s)".format(path, time.perf_counter() - started))
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
