"""The error handling of deploy's own entry points (python -m deploy.infer / deploy.build), which use argparse.

Like cli.py, they turn the project's errors into one line ``error: ...`` and an exit code, never a traceback.
"""
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Dict, List, Optional

from .errors import CheckFailedError, UserError, is_disk_error, os_error

INTERRUPTED_EXIT = 130
BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe


# SIGTERM (`kill`, a container or job scheduler stopping the run) is an interrupt like Ctrl-C: same cleanup.
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Interrupts:
    """SIGINT and SIGTERM handling shared by cli.py and deploy's own entry points: the first signal raises
    KeyboardInterrupt so ``finally`` blocks remove temp files; a second one while that cleanup runs exits at
    once with 130 instead of a traceback from inside the cleanup. Either way the run says "interrupted" once and
    exits 130, even when a library swallowed the KeyboardInterrupt (the flag is checked at the end).

    Once the entry point has its exit code (``finishing``), every ``finally`` of the run has already run, and
    what is left is the interpreter's shutdown: joining thread-pool workers, atexit callbacks. A
    KeyboardInterrupt raised there cannot be caught by us; Python prints it as "Exception ignored in atexit
    callback" with a traceback and exits 0. So a signal then ends the process at once: stdout and stderr are
    flushed, "interrupted" is said, and os._exit(130) skips the rest of the shutdown, which only frees memory
    and joins idle workers (no atexit callback of ours or of the libraries we use writes files)."""

    seen = False        # a signal came
    said = False        # "interrupted" was printed
    finishing = False   # the entry point is returning: only the interpreter's shutdown is left
    held = 0            # nesting of interrupts_held() blocks in the main thread
    pending = False     # a signal came inside such a block

    @classmethod
    def handler(cls, signum, frame):
        if cls.seen or cls.finishing:
            _flush_standard_streams()
            say_interrupted(raw=True)
            os._exit(INTERRUPTED_EXIT)
        cls.seen = True
        if cls.held:
            cls.pending = True
            return
        raise KeyboardInterrupt

    @classmethod
    def install(cls) -> None:
        cls.seen = cls.said = cls.finishing = cls.pending = False
        cls.held = 0
        if threading.current_thread() is threading.main_thread():
            for signum in INTERRUPT_SIGNALS:
                signal.signal(signum, cls.handler)


def install_interrupt_handler() -> None:
    _Interrupts.install()


def was_interrupted() -> bool:
    return _Interrupts.seen


def finishing() -> None:
    """Called by an entry point once it has its exit code: from here a signal exits at once (see _Interrupts)."""
    _Interrupts.finishing = True


def say_interrupted(raw: bool = False) -> None:
    """The "interrupted" line. ``raw``: from the signal handler, which exits next: it writes to the file
    descriptor (the stderr object may be mid-write) and stays silent when the run already said it, so a signal
    during the shutdown after a reported interrupt does not repeat the line."""
    if not raw:
        _Interrupts.said = True
        print("interrupted", file=sys.stderr)
    elif not _Interrupts.said:
        _Interrupts.said = True
        try:
            os.write(2, b"interrupted\n")
        except OSError:
            pass


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001  (a closed pipe, or a flush the signal interrupted: nothing to save)
            pass


@contextlib.contextmanager
def interrupts_held():
    """Hold SIGINT/SIGTERM until the block ends, then raise the KeyboardInterrupt: for steps that must not be
    split, like creating a temp file and recording it for removal, or renaming a set of files into place. Only
    the main thread handles signals, so elsewhere this holds nothing. Without our handler installed (a library
    caller) a Ctrl-C is not held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Interrupts.held += 1
    try:
        yield
    finally:
        _Interrupts.held -= 1
        if not _Interrupts.held and _Interrupts.pending:
            _Interrupts.pending = False
            raise KeyboardInterrupt


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
