"""SIGINT and SIGTERM handling shared by cli.py, deploy's entry points and the atomic writers in deploy.fileio.

It lives apart from deploy.cliutil so that the file writers (deploy.fileio), which every room uses, can hold a
signal around a rename without importing the command-line helpers.
"""
import contextlib
import os
import signal
import sys
import threading

INTERRUPTED_EXIT = 130


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
