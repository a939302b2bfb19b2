"""Atomic file writes, so an interrupted run never leaves a half-written artifact at the output path.

Temporary files are named ``.<name>.<pid>-<random>.part`` beside their target. A run killed outright (SIGKILL,
power loss) cannot remove its own, so the next write to the same target removes those left behind: only names
of this pattern, only for that target, only when older than this run and not owned by a live process.
"""
import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from typing import Dict, Iterator, Sequence

from .errors import UserError, is_disk_error, os_error
from .validate import check_output_files

TEMP_SUFFIX = ".part"
# When this process started, near enough: a temp file older than this is not from this run.
RUN_STARTED = time.time()


def temp_prefix(path) -> str:
    return ".{}.{}-".format(os.path.basename(os.fspath(path)), os.getpid())


def _stale_pattern(name: str):
    # ours: .<name>.<pid>-<random>.part; older releases wrote .<name>.<random>.part (no pid). A writer handed one
    # of our temp paths makes its own temp of it (..<name>.<pid>-<random>.part.<pid>-<random>.part); a bundle's
    # previous folder waits as <staging>.old while it is removed.
    part = r"\.(?:(\d+)-)?[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX)
    return re.compile(r"^\.\.?{}{}(?:\.(?:\d+-)?[A-Za-z0-9_]+{})?(?:\.old)?$".format(
        re.escape(name), part, re.escape(TEMP_SUFFIX)))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path) -> int:
    """Remove temp files (or staging folders) of ``path`` left by killed runs; returns how many went."""
    path = os.path.abspath(os.fspath(path))
    directory, pattern = os.path.dirname(path), _stale_pattern(os.path.basename(path))
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        match = pattern.match(entry.name)
        if not match:
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= RUN_STARTED:
                continue
            if match.group(1) and _pid_alive(int(match.group(1))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            continue  # another run got there first, or it is not ours to remove
    return removed


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block completes.

    A full disk or a read-only file system is a UserError naming ``path``, not a traceback.
    """
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    if os.path.isdir(path):
        raise UserError("cannot write {}: it is a folder".format(path))
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise os_error(exc, path) from None
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); artifacts get the mode an ordinary open() would give them.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and is_disk_error(exc):
            raise os_error(exc, path) from None
        raise


@contextlib.contextmanager
def staged_files(paths: Sequence[str]) -> Iterator[Dict[str, str]]:
    """Write a set of artifacts as a set: yield {final path: temp path}; when the block completes, every temp
    file is renamed over its final path in one quick pass, else all are removed and the old set stays whole.

    Paths are checked first (none may be a folder), so nothing is replaced when one of them cannot be written.
    """
    finals = check_output_files(paths)
    temps: Dict[str, str] = {}
    try:
        for final in finals:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            remove_stale_temps(final)
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(final), suffix=TEMP_SUFFIX, dir=os.path.dirname(final))
            os.close(fd)
            temps[final] = tmp
    except OSError as exc:
        _remove_all(temps.values())
        raise os_error(exc, final) from None
    try:
        yield dict(temps)
        mode = 0o666 & ~_current_umask()
        for final, tmp in temps.items():
            if os.path.exists(tmp):
                os.chmod(tmp, mode)
        for final, tmp in temps.items():
            if os.path.exists(tmp):
                os.replace(tmp, final)
    except BaseException as exc:
        _remove_all(temps.values())
        if isinstance(exc, OSError) and is_disk_error(exc):
            raise os_error(exc, _final_for(str(getattr(exc, "filename", "") or ""), temps)) from None
        if isinstance(exc, UserError) and any(tmp in str(exc) for tmp in temps.values()):
            message = str(exc)  # a writer's own error names our temp file: name the artifact instead
            for final, tmp in temps.items():
                message = message.replace(tmp, final)
            raise UserError(message) from None
        raise


def _final_for(filename: str, temps: Dict[str, str]) -> str:
    """The artifact a failing temp file stood for (a writer may nest its own temp inside ours)."""
    for final, tmp in temps.items():
        if filename and os.path.basename(tmp) in filename:
            return final
    return os.path.dirname(next(iter(temps)))


def _remove_all(paths) -> None:
    for tmp in paths:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


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
