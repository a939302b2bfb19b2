"""Atomic file writes, so an interrupted run never leaves a half-written artifact at the output path."""
import contextlib
import hashlib
import json
import os
import tempfile

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block completes."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=directory)
    except OSError as exc:
        raise UserError("cannot write {}: {}".format(path, exc.strerror or exc)) from None
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); artifacts get the mode an ordinary open() would give them.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
