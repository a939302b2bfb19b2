"""One pipeline run at a time per ``--out``: the state file, the models and the bundle there belong to one run.

Two runs into one folder would each rewrite ``pipeline_state.json`` from what they loaded, and the later write
drops what the other recorded (a bundle it wrote, which no later run may then replace). So a run holds an
exclusive ``flock`` on ``<out>/.pipeline.lock`` from before it reads the state until it ends, and a second run
refuses at once in one line, naming the holder's pid. The kernel drops the lock when its process dies however it
dies, so a lock left by a killed run is taken over by the next, with no pid to check.
"""
import errno
import os
from contextlib import contextmanager
from typing import Iterator

from deploy.errors import UserError, os_error

LOCK_FILE = ".pipeline.lock"


@contextmanager
def out_lock(out: str) -> Iterator[str]:
    """Hold ``out``'s lock for the block; UserError when another live run holds it."""
    import fcntl  # POSIX only, like the rest of the pipeline's file handling; deploy/ never needs it

    path = os.path.join(out, LOCK_FILE)
    try:
        os.makedirs(out, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise os_error(exc, path) from None
            raise UserError("another pipeline run{} is writing into --out {}; wait for it to end, or choose another "
                            "--out".format(_holder(descriptor), out)) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, "{}\n".format(os.getpid()).encode("ascii"))
        yield path
    finally:
        os.close(descriptor)  # closing releases the lock; the file stays, so a waiting run never locks a ghost


def _holder(descriptor: int) -> str:
    """' (pid N)' from the lock file, when the holder has written it yet."""
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return " (pid {})".format(text) if text.isdigit() else ""
