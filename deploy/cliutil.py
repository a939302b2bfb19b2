"""The error handling of deploy's own entry points (python -m deploy.infer / deploy.build), which use argparse.

Like cli.py, they turn the project's errors into one line ``error: ...`` and an exit code, never a traceback.
"""
import os
import sys
from typing import Callable, Dict, List, Optional

from .errors import CheckFailedError, UserError, is_disk_error, os_error
from .interrupts import INTERRUPTED_EXIT, finishing, install_interrupt_handler, say_interrupted, was_interrupted
from .names import terminal_text

BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's captured stdout)
        pass


def report_error(exc: BaseException) -> Optional[int]:
    """Print the one line for a known failure and return its exit code; None for a real bug (re-raise it)."""
    if isinstance(exc, KeyboardInterrupt):
        say_interrupted()
        return INTERRUPTED_EXIT
    if isinstance(exc, BrokenPipeError):  # `... --json | head -1`: the reader left, which is not our error
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    if isinstance(exc, OSError) and is_disk_error(exc):  # a full disk anywhere, not just in our writers
        exc = os_error(exc)
    if isinstance(exc, (UserError, CheckFailedError)):
        sys.stdout.flush()
        # a name inside the message (a file, a tensor, a class) cannot make it two lines or rewrite the terminal
        print("error: {}".format(terminal_text(exc)), file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, MemoryError):
        print("error: out of memory; use fewer or smaller inputs (a smaller --batch or --num-images)",
              file=sys.stderr)
        return 2
    return None


def run_main(body: Callable[[], Optional[int]]) -> int:
    install_interrupt_handler()
    try:
        try:
            code = int(body() or 0)
        finally:
            finishing()
    except BaseException as exc:  # noqa: BLE001  (sorted by report_error; anything unknown is re-raised)
        if isinstance(exc, SystemExit):
            raise
        code = report_error(exc)
        if code is None:
            raise
    if was_interrupted() and code != INTERRUPTED_EXIT:
        say_interrupted()
        return INTERRUPTED_EXIT
    return code


def note(message: str) -> None:
    """A one-line remark on stderr, so stdout stays clean for --json."""
    print("note: " + terminal_text(message), file=sys.stderr)


# -- options and labels the torch-free entry points (deploy.infer, deploy.check, deploy.bench) share -------------

def parse_providers(text: str) -> List[str]:
    """``"cuda,cpu"`` -> ["cuda", "cpu"]: ONNX Runtime's providers in the order they are tried."""
    return [part.strip() for part in str(text).split(",") if part.strip()] or ["cpu"]


def add_providers_argument(parser, what: str = "the .onnx models") -> None:
    parser.add_argument("--providers", default=["cpu"], type=parse_providers,
                        help="ONNX Runtime providers for {}, comma-separated: cpu, cuda, tensorrt (default cpu); one "
                             "that cannot run here is a warning, and what really runs is reported".format(what))


def runner_label(runner: Dict[str, object]) -> str:
    """A runner's describe() as one short table cell: "onnxruntime CPU", "tensorrt (CUDA graph)"."""
    providers = runner.get("providers")
    if providers:
        return "onnxruntime " + "+".join(str(p).replace("ExecutionProvider", "") for p in providers)
    if runner.get("backend") == "tensorrt":
        return "tensorrt" + (" (CUDA graph)" if runner.get("cuda_graph") else "")
    return str(runner.get("backend") or "-")
