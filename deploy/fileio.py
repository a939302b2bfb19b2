"""Atomic file writes, so an interrupted run never leaves a half-written artifact at the output path.

Temporary files are named ``.<name>.<pid>-<random>.part`` beside their target (a name too long for that keeps
its head and a hash of the whole, so the temp name fits the file system too). A run killed outright (SIGKILL,
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
from .interrupts import interrupts_held
from .validate import check_output_file, check_output_files

TEMP_SUFFIX = ".part"
# When this process started, near enough: a temp file older than this is not from this run.
RUN_STARTED = time.time()


# What a temp name adds to its target's name at most: the dots, a pid of up to 7 digits (Linux's pid_max is at
# most 2**22), "-", mkstemp's 8 random characters, TEMP_SUFFIX and a bundle staging folder's ".old".
TEMP_OVERHEAD = 2 + 7 + 1 + 8 + len(TEMP_SUFFIX) + len(".old")
DEFAULT_NAME_MAX = 255


def _name_max(directory: str) -> int:
    """The longest file name (in bytes) the file system of ``directory`` (or its nearest existing parent) takes."""
    while directory and not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    try:
        return int(os.pathconf(directory or ".", "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        return DEFAULT_NAME_MAX


def temp_stem(path) -> str:
    """The target's name as its temp files carry it: whole when the temp name fits the file system, else cut
    and tagged with a hash of the whole name, so any name the file system takes can be written atomically."""
    path = os.path.abspath(os.fspath(path))
    name = os.path.basename(path)
    room = _name_max(os.path.dirname(path)) - TEMP_OVERHEAD
    if len(os.fsencode(name)) <= room:
        return name
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    cut = name
    while cut and len(os.fsencode(cut + tag)) > room:
        cut = cut[:-1]
    return cut + tag


def temp_prefix(path) -> str:
    return ".{}.{}-".format(temp_stem(path), os.getpid())


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
    directory, pattern = os.path.dirname(path), _stale_pattern(temp_stem(path))
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
    if os.path.isdir(path):
        raise UserError("cannot write {}: it is a folder".format(path))
    check_output_file(path)  # a file where a parent folder should be: say so, not "File exists"
    tmp = None
    try:
        with interrupts_held():  # a SIGINT/SIGTERM waits until tmp is set, so the except below removes the file
            tmp = _make_temp(path)
        yield tmp
        # mkstemp makes the file private (0600); artifacts get the mode an ordinary open() would give them.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and is_disk_error(exc):
            raise os_error(exc, path) from None
        raise


def _make_temp(path: str) -> str:
    """An empty temp file beside ``path`` (its folder made first, stale temps of killed runs removed)."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise os_error(exc, path) from None
    os.close(fd)
    return tmp


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
            with interrupts_held():  # a signal waits until the temp is in ``temps``, so it is removed below
                temps[final] = _make_temp(final)
    except BaseException:  # a full disk, or a Ctrl-C/SIGTERM halfway through: none of the set stays behind
        _remove_all(temps.values())
        raise
    try:
        yield dict(temps)
        mode = 0o666 & ~_current_umask()
        # held, so an interrupt never leaves half the set renamed: the artifacts are consistent before or after
        with interrupts_held():
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
