"""Finding image files: folders walked recursively (following symlinks), extensions matched case-insensitively."""
import os
from typing import Iterable, List

from .errors import UserError
from .preprocess import IMAGE_EXTENSIONS

SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


def is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def walk_images(directory: str) -> List[str]:
    """All image files below ``directory``, sorted, symlinked folders included (each real folder once)."""
    found, seen = [], set()
    for root, dirs, files in os.walk(directory, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(os.path.join(root, name) for name in files if is_image_file(name))
    return sorted(found)


def collect_images(inputs: Iterable[str]) -> List[str]:
    """Expand files and folders into a list of image paths, keeping the order given."""
    paths: List[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            paths.extend(walk_images(item))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise UserError("no such file or folder: {}".format(item))
    return paths


def sample_images() -> List[str]:
    """The real photos shipped with deploy/ (from scikit-image's data set) for demos and smoke tests."""
    return walk_images(SAMPLES_DIR)
