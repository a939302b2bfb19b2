"""The project's error types. The CLI turns them into one line and an exit code; library code never exits."""
import os
import re
import shutil


class UserError(Exception):
    """Bad usage or bad input: a missing file, a wrong model, an unreadable checkpoint."""

    exit_code = 2


class MissingDependencyError(UserError):
    """An optional package (tensorrt, CUDA bindings, OpenCV) is needed for the requested operation."""

    def __init__(self, package, purpose, hint=None):
        message = "{} is required to {}".format(package, purpose)
        if hint:
            message += "; " + hint
        super().__init__(message)
        self.package = package


class CheckFailedError(Exception):
    """A verification ran and its result is out of bounds (parity, accuracy drop)."""

    exit_code = 1


# errno -> what the user should hear; anything else falls back to the system's own words.
_OS_REASONS = {28: "the disk is full", 122: "the disk quota is exceeded", 30: "the file system is read-only",
               13: "permission denied", 1: "permission denied", 36: "the file name is too long"}


def os_error(exc: OSError, path=None, action: str = "write") -> UserError:
    """One UserError line for an OSError while reading or writing ``path`` (default: the file the error names):
    which path, and why in plain words (a full disk, a read-only file system). A ``shutil.Error`` (a list of
    per-file errors) is described by its first one."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        source, target, why = (list(exc.args[0][0]) + ["", "", ""])[:3]
        path = path or target or source
        match = re.search(r"\[Errno (\d+)\]", str(why))
        reason = _OS_REASONS.get(int(match.group(1))) if match else None
        return UserError("cannot {} {}: {}".format(action, path, reason or str(why).splitlines()[0][:200]))
    errno = getattr(exc, "errno", None)
    reason = _OS_REASONS.get(errno) or (exc.strerror or str(exc) or type(exc).__name__)
    where = path if path is not None else getattr(exc, "filename", None)
    where = os.fspath(where) if where is not None else "a file"
    return UserError("cannot {} {}: {}".format(action, where, reason))


def is_disk_error(exc: BaseException) -> bool:
    """An OSError that is the machine's fault, not the program's: full disk, quota, read-only, no permission."""
    if isinstance(exc, shutil.Error):
        return True
    return isinstance(exc, OSError) and getattr(exc, "errno", None) in _OS_REASONS
