"""The error handling of deploy's own entry points (python -m deploy.infer / deploy.build), which use argparse.

Like cli.py, they turn the project's errors into one line ``error: ...`` and an exit code, never a traceback.
"""
import sys
from typing import Callable, Optional

from .errors import CheckFailedError, UserError


def run_main(body: Callable[[], Optional[int]]) -> int:
    try:
        return int(body() or 0)
    except (UserError, CheckFailedError) as exc:
        sys.stdout.flush()
        print("error: {}".format(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def note(message: str) -> None:
    """A one-line remark on stderr, so stdout stays clean for --json."""
    print("note: " + message, file=sys.stderr)


def add_build_options(parser) -> None:
    """The build options of ``deploy.trt.plan.BUILD_CLI_OPTIONS`` on an argparse parser."""
    from .trt.plan import BUILD_CLI_OPTIONS
    for option in BUILD_CLI_OPTIONS:
        if option.kind == "flag":
            parser.add_argument(option.flag, dest=option.dest, action="store_true", help=option.help)
        elif option.kind == "choice":
            parser.add_argument(option.flag, dest=option.dest, choices=option.choices, help=option.help)
        else:
            parser.add_argument(option.flag, dest=option.dest, type=int if option.kind == "int" else str,
                                metavar=option.metavar, help=option.help)
