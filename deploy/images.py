"""Finding image files: folders walked recursively (following symlinks), extensions matched case-insensitively."""
import os
from typing import Iterable, List, Optional

from .errors import UserError
from .filekind import file_kind, is_regular_file
from .preprocess import IMAGE_EXTENSIONS

SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def walk_images(directory: str, ignored: Optional[List[str]] = None) -> List[str]:
    """All image files below ``directory``, sorted, symlinked folders included (each real folder once).

    Other files (not hidden ones) are appended to ``ignored`` when given, so callers can say how many were left
    out instead of dropping them without a word."""
    found, seen = [], set()
    for root, dirs, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            # a FIFO named x.png would block the decoder's open() forever: only regular files are images
            if is_image_file(name) and is_regular_file(path):
                found.append(path)
            elif ignored is not None and not name.startswith("."):
                ignored.append(path)
    return sorted(found)


def ignored_note(ignored: List[str]) -> Optional[str]:
    """One line on the files a folder walk left out, or None: those that are not regular files (FIFOs,
    sockets, devices, broken links; stat'ed again here, which cannot block) and those of other types."""
    if not ignored:
        return None
    special = [path for path in ignored if not is_regular_file(path)]
    other = [path for path in ignored if is_regular_file(path)]
    parts = []
    if special:
        parts.append("skipped {} file(s) that are not regular files (e.g. {}, {})".format(
            len(special), special[0], file_kind(special[0])))
    if other:
        kinds = sorted({os.path.splitext(path)[1].lower() or "(no extension)" for path in other})
        parts.append("left out {} file(s) that are not supported images ({}; e.g. {}); supported: {}".format(
            len(other), ", ".join(kinds[:5]), other[0], " ".join(IMAGE_EXTENSIONS)))
    return "; ".join(parts)


def collect_images(inputs: Iterable[str], ignored: Optional[List[str]] = None) -> List[str]:
    """Expand files and folders into a list of image paths, keeping the order given. A FIFO, socket or device
    given directly is left out (into ``ignored``) like one found in a folder; a missing path is an error."""
    paths: List[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths.extend(walk_images(item, ignored))
        elif is_regular_file(item):
            paths.append(item)
        elif os.path.lexists(item) and ignored is not None:
            ignored.append(item)
        elif os.path.lexists(item):
            raise UserError("{} is {}, not an image file".format(item, file_kind(item)))
        else:
            raise UserError("no such file or folder: {}".format(item))
    return paths


def sample_images() -> List[str]:
    """The real photos shipped with deploy/ (from scikit-image's data set) for demos and smoke tests."""
    return walk_images(SAMPLES_DIR)
