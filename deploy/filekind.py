"""What kind of file a path is, decided by ``os.stat`` before anything opens it.

Opening a FIFO for reading blocks until a writer comes (forever, in a folder of images), a character device
such as /dev/zero never ends, and a socket cannot be opened at all. So every reader of user files (images in
folders or given directly, labels files, state files) asks ``is_regular_file`` first and never finds out by
trying. Links are followed: a link to a regular file is one, a link to anything else (or to nothing) is not.
"""
import os
import stat

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def is_regular_file(path) -> bool:
    """True only for a regular file, links followed; never opens ``path``, so it cannot block."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):  # missing, a broken or looping link, a name with a NUL byte
        return False


def file_kind(path) -> str:
    """What ``path`` is, in words, for a message that says why it was not read."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "a broken link" if os.path.islink(path) else "missing"
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")
