"""The error handling of deploy's own entry points (python -m deploy.infer / deploy.build), which use argparse.

Like cli.py, they turn the project's errors into one line ``error: ...`` and an exit code, never a traceback.
"""
import os
import signal
import sys
import threading
from typing import Callable, Optional

from .errors import CheckFailedError, UserError, is_disk_error, os_error

INTERRUPTED_EXIT = 130
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe


class _Interrupts:
    """SIGINT handling shared by cli.py and deploy's own entry points: the first Ctrl-C raises
    KeyboardInterrupt so ``finally`` blocks remove temp files; a second one while that cleanup runs exits at
    once with 130 instead of a traceback from inside the cleanup. Either way the run says "interrupted" and
    exits 130, even when a library swallowed the KeyboardInterrupt (the flag is checked at the end)."""

    seen = False

    @classmethod
    def handler(cls, signum, frame):
        if cls.seen:
            os.write(2, b"interrupted\n")
            os._exit(INTERRUPTED_EXIT)
        cls.seen = True
        raise KeyboardInterrupt

    @classmethod
    def install(cls) -> None:
        cls.seen = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, cls.handler)


def install_interrupt_handler() -> None:
    _Interrupts.install()


def was_interrupted() -> bool:
    return _Interrupts.seen


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
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    if isinstance(exc, BrokenPipeError):  # `... --json | head -1`: the reader left, which is not our error
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    if isinstance(exc, OSError) and is_disk_error(exc):  # a full disk anywhere, not just in our writers
        exc = os_error(exc)
    if isinstance(exc, (UserError, CheckFailedError)):
        sys.stdout.flush()
        print("error: {}".format(exc), file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, MemoryError):
        print("error: out of memory; use fewer or smaller inputs (a smaller --batch or --num-images)",
              file=sys.stderr)
        return 2
    return None


def run_main(body: Callable[[], Optional[int]]) -> int:
    install_interrupt_handler()
    try:
        code = int(body() or 0)
    except BaseException as exc:  # noqa: BLE001  (sorted by report_error; anything unknown is re-raised)
        if isinstance(exc, SystemExit):
            raise
        code = report_error(exc)
        if code is None:
            raise
    if was_interrupted() and code != INTERRUPTED_EXIT:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    return code


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
