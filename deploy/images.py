"""Finding image files: folders walked recursively (following symlinks), extensions matched case-insensitively."""
import os
from typing import Iterable, List, Optional

from .errors import UserError
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
        found.extend(os.path.join(root, name) for name in files if is_image_file(name))
        if ignored is not None:
            ignored.extend(os.path.join(root, name) for name in sorted(files)
                           if not is_image_file(name) and not name.startswith("."))
    return sorted(found)


def ignored_note(ignored: List[str]) -> Optional[str]:
    """One line on the files a folder walk left out, or None."""
    if not ignored:
        return None
    kinds = sorted({os.path.splitext(path)[1].lower() or "(no extension)" for path in ignored})
    return "left out {} file(s) that are not supported images ({}; e.g. {}); supported: {}".format(
        len(ignored), ", ".join(kinds[:5]), ignored[0], " ".join(IMAGE_EXTENSIONS))


def collect_images(inputs: Iterable[str], ignored: Optional[List[str]] = None) -> List[str]:
    """Expand files and folders into a list of image paths, keeping the order given."""
    paths: List[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths.extend(walk_images(item, ignored))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise UserError("no such file or folder: {}".format(item))
    return paths


def sample_images() -> List[str]:
    """The real photos shipped with deploy/ (from scikit-image's data set) for demos and smoke tests."""
    return walk_images(SAMPLES_DIR)
