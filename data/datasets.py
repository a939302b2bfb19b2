"""Calibration images: find them, sample them by class, decode them in parallel, and cache the result.

``--data DIR`` is one of
  * an ImageFolder tree ``DIR/<class>/**/<image>``; labels follow the sorted class folder names, as in
    torchvision's ImageFolder (for ImageNet that is the sorted synset order);
  * a flat folder of images (nested folders are walked too), unlabeled;
  * a flat folder plus a labels file: ``<file> <class index>`` lines, or ImageNet's ``LOC_val_solution.csv``.

Decoding goes through the model's own preprocessing (deploy.preprocess). The decoded S x S uint8 crops are
cached on disk, keyed by the file list (paths, sizes, mtimes) and the preprocessing spec, so a second run
with the same images skips decoding.
"""
import csv
import functools
import hashlib
import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL

import deploy

from deploy.errors import UserError
from deploy.fileio import atomic_path
from deploy.filekind import is_regular_file
from deploy.text import read_text_lines
from deploy.images import ignored_note, is_image_file, walk_images
from deploy.validate import check_labels_in_range, check_memory, parse_class_index
from deploy.preprocess import IMAGE_EXTENSIONS, PreprocessSpec, decode_image, resize_and_crop, to_model_input
from deploy.progress import progress_bar

DEFAULT_NUM_IMAGES = 512
CACHE_ENV = "ECA_DEPLOY_CACHE"
CACHE_FORMAT = 1              # bump when the layout of cache files or the decode pipeline changes
CACHE_BUDGET_BYTES = 4 << 30  # older cache files beyond this total are deleted
EXECUTORS = ("thread", "process")
IMAGENET_CLASSES_TSV = os.path.join(os.path.dirname(os.path.abspath(deploy.__file__)), "data", "imagenet_classes.tsv")
LOC_HEADER = ("ImageId", "PredictionString")


# -- what is there ---------------------------------------------------------------------------------------

@dataclass
class ImageSet:
    """Image files and, when known, their class indices (aligned with ``paths``)."""

    paths: List[str]
    labels: Optional[List[int]]          # None when unlabeled
    class_names: Optional[List[str]]     # ImageFolder folder names, or the 1000 synsets for LOC csv, else None
    notes: List[str] = field(default_factory=list)  # things a user should hear about (images left out, ...)
    # where each label came from ("labels.txt line 7", "class folder n01440764"), aligned with ``labels``
    label_sources: Optional[List[str]] = None

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        return ImageSet(
            paths=[self.paths[i] for i in indices],
            labels=None if self.labels is None else [self.labels[i] for i in indices],
            class_names=self.class_names,
            notes=list(self.notes),
            label_sources=None if self.label_sources is None else [self.label_sources[i] for i in indices],
        )

    def check_fits(self, num_classes: int) -> None:
        """Every label is a class of a ``num_classes`` model; else UserError naming the first bad line."""
        if self.labels is not None:
            order = sorted(range(len(self.labels)), key=lambda i: _source_order(self.label_sources, i))
            check_labels_in_range([self.labels[i] for i in order],
                                  None if self.label_sources is None else [self.label_sources[i] for i in order],
                                  num_classes)


def _source_order(sources: Optional[List[str]], index: int):
    """Sort key putting labels in file-line order, so the error names the first bad line of the file."""
    text = sources[index] if sources else ""
    match = re.search(r" line (\d+)$", text or "")
    return (int(match.group(1)) if match else 0, index)


def discover(data_dir, labels_file=None) -> ImageSet:
    """The images under ``data_dir``: an ImageFolder tree, a flat folder, or a flat folder + labels file.
    Files that are not supported images are counted in a note, never dropped without a word."""
    ignored: List[str] = []
    images = _discover(data_dir, labels_file, ignored)
    if ignored_note(ignored):
        images.notes.append(ignored_note(ignored))
    return images


def _is_dir(entry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink to itself, or one whose target vanished: not a folder
        return False


def _discover(data_dir, labels_file, ignored: List[str]) -> ImageSet:
    root = _check_folder(data_dir)
    if labels_file is not None:
        return _discover_with_labels(root, os.fspath(labels_file), ignored)
    try:
        entries = list(os.scandir(root))
    except OSError as exc:
        raise UserError("cannot read folder {}: {}".format(root, exc.strerror or exc)) from None
    if not entries:
        raise UserError("data folder {} is empty".format(root))
    # Images at the top level mean a flat folder; otherwise the subfolders are classes (as in ImageFolder,
    # which ignores top-level files).
    if any(is_image_file(entry.name) and is_regular_file(entry.path) for entry in entries):
        notes = []
        if any(_is_dir(entry) for entry in entries):
            notes.append("{} has images at its top level, so it is read as one unlabeled folder (subfolders "
                         "included), not as class folders".format(root))
        return ImageSet(paths=_walk_or_fail(root, ignored), labels=None, class_names=None, notes=notes)
    classes = sorted(entry.name for entry in entries if _is_dir(entry) and not entry.name.startswith("."))
    if not classes:
        raise _no_images(root, entries)
    return _discover_image_folder(root, classes, ignored)


def _check_folder(data_dir) -> str:
    root = os.fspath(data_dir)
    if not os.path.exists(root):
        raise UserError("no such data folder: {}".format(root))
    if not os.path.isdir(root):
        raise UserError("{} is not a folder; --data expects a folder of images".format(root))
    return root


def _no_images(root: str, ignored: Sequence = ()) -> UserError:
    other = " ({} other file(s) there)".format(len(ignored)) if ignored else ""
    return UserError("no images ({}) under {}{}".format(" ".join(IMAGE_EXTENSIONS), root, other))


def _walk_or_fail(root: str, ignored: Optional[List[str]] = None) -> List[str]:
    ignored = [] if ignored is None else ignored
    paths = walk_images(root, ignored)
    if not paths:
        raise _no_images(root, ignored)
    return paths


def _class_indices(classes: List[str]):
    """Sorted-folder indices as torchvision's ImageFolder; but folders named by ImageNet synsets keep their
    ImageNet index, so a subset of the validation set (say 100 class folders) is still scored correctly
    against a 1000-class model. With all 1000 synsets both rules agree."""
    synsets = imagenet_synsets()
    synset_index = {synset: i for i, synset in enumerate(synsets)}
    if all(name in synset_index for name in classes):
        return [synset_index[name] for name in classes], synsets
    return list(range(len(classes))), classes


def _discover_image_folder(root: str, classes: List[str], ignored: List[str]) -> ImageSet:
    paths: List[str] = []
    labels: List[int] = []
    sources: List[str] = []
    empty = []
    indices, class_names = _class_indices(classes)
    for index, name in zip(indices, classes):
        found = walk_images(os.path.join(root, name), ignored)
        if not found:
            empty.append(name)
        paths.extend(found)
        labels.extend([index] * len(found))
        sources.extend(["class folder {} (index {})".format(os.path.join(root, name), index)] * len(found))
    if not paths:
        raise _no_images(root)
    notes = []
    if empty:
        notes.append("{} of {} class folders hold no images (e.g. {}); class indices still count them".format(
            len(empty), len(classes), empty[0]))
    return ImageSet(paths=paths, labels=labels, class_names=class_names, notes=notes, label_sources=sources)


# -- labels files ----------------------------------------------------------------------------------------

def imagenet_synsets() -> List[str]:
    """The 1000 ImageNet synsets in class-index order (sorted), from deploy/data/imagenet_classes.tsv."""
    with open(IMAGENET_CLASSES_TSV, "r", encoding="utf-8") as handle:
        return [line.split("\t", 1)[0].strip() for line in handle if line.strip()]


def _discover_with_labels(root: str, labels_file: str, ignored: List[str]) -> ImageSet:
    lines = read_text_lines(labels_file, "labels file")
    paths = _walk_or_fail(root, ignored)
    first = next((line for line in lines if line.strip()), "")
    if first.replace(" ", "").startswith(",".join(LOC_HEADER)):
        return _match_loc_csv(root, paths, labels_file, lines)
    return _match_listing(root, paths, labels_file, lines)


_LISTING_LINE = re.compile(r"^(.+?)[\s,]+(-?\d+)$")


def _parse_listing(labels_file: str, lines: List[str], line_of: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """``<file> <class index>`` lines (space, tab or comma separated; blank lines and # comments skipped).
    ``line_of`` is filled with each name's line number."""
    entries: Dict[str, int] = {}
    line_of = {} if line_of is None else line_of
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _LISTING_LINE.match(text)
        if not match:
            raise UserError("labels file {} line {}: expected '<file> <class index>', got {!r}".format(
                labels_file, number, text[:80]))
        name, label = _normalize_name(match.group(1)), parse_class_index(match.group(2), labels_file, number)
        if entries.get(name, label) != label:
            raise UserError("labels file {} gives {} two classes ({} and {})".format(
                labels_file, name, entries[name], label))
        entries[name] = label
        line_of.setdefault(name, number)
    if not entries:
        raise UserError("labels file {} lists no files".format(labels_file))
    return entries


def _normalize_name(name: str) -> str:
    name = name.strip().strip('"').replace("\\", "/")
    return name[2:] if name.startswith("./") else name


class _FileIndex:
    """Find the images under a root by file name or stem, or by path relative to the root when one is given.

    A name with a folder part must match that relative path; a bare name may match a file in any subfolder.
    """

    def __init__(self, root: str, paths: List[str]):
        self.root = root
        self.tables: Dict[Tuple[bool, bool], Dict[str, List[str]]] = {}
        for path in paths:
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            for with_folder, key in ((True, rel), (False, os.path.basename(rel))):
                self.tables.setdefault((with_folder, False), {}).setdefault(key, []).append(path)
                stem = os.path.splitext(key)[0]
                self.tables.setdefault((with_folder, True), {}).setdefault(stem, []).append(path)

    def find(self, name: str, by_stem: bool) -> List[str]:
        if os.path.isabs(name):
            name = os.path.relpath(name, self.root).replace(os.sep, "/")
        return self.tables.get(("/" in name, by_stem), {}).get(name, [])


def _match_listing(root: str, paths: List[str], labels_file: str, lines: List[str]) -> ImageSet:
    line_of: Dict[str, int] = {}
    entries = _parse_listing(labels_file, lines, line_of)
    index = _FileIndex(root, paths)
    found: Dict[str, int] = {}
    where: Dict[str, str] = {}
    missing = []
    for name, label in entries.items():
        hits = index.find(name, by_stem=False)
        if not hits and not is_image_file(name):
            hits = index.find(name, by_stem=True)
        if len(hits) > 1:
            raise UserError("labels file {} names {}, which matches {} files under {}; give its path relative "
                            "to the folder".format(labels_file, name, len(hits), root))
        if hits:
            found[hits[0]] = label
            where[hits[0]] = "labels file {} line {}".format(labels_file, line_of[name])
        else:
            missing.append(name)
    # A hand-written listing that names absent files is a mistake worth stopping for.
    if missing:
        raise UserError("labels file {} names {} file(s) not found under {}: {}".format(
            labels_file, len(missing), root, _examples(missing)))
    return _labeled_set(paths, found, class_names=None, labels_file=labels_file, where=where)


def _match_loc_csv(root: str, paths: List[str], labels_file: str, lines: List[str]) -> ImageSet:
    """ImageNet's LOC_val_solution.csv: the first synset of each row's PredictionString is its class.

    The csv covers all 50,000 validation images and people calibrate on a subset of them, so rows without an
    image are fine; only a csv that matches none of the images is an error.
    """
    synsets = imagenet_synsets()
    synset_index = {synset: i for i, synset in enumerate(synsets)}
    start = next(number for number, line in enumerate(lines) if line.strip())  # the header, after blank lines
    rows = csv.reader(lines[start:])
    header = [column.strip() for column in next(rows)]
    id_col, pred_col = header.index(LOC_HEADER[0]), header.index(LOC_HEADER[1])
    index = _FileIndex(root, paths)
    found: Dict[str, int] = {}
    where: Dict[str, str] = {}
    unmatched = []
    for number, row in enumerate(rows, start + 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        tokens = row[pred_col].split() if len(row) > max(id_col, pred_col) else []
        if not tokens or tokens[0] not in synset_index:
            raise UserError("labels file {} line {}: expected 'ImageId,<synset> ...', got {!r}".format(
                labels_file, number, ",".join(row)[:80]))
        hits = index.find(row[id_col].strip(), by_stem=True)
        for path in hits:
            found[path] = synset_index[tokens[0]]
            where[path] = "labels file {} line {}".format(labels_file, number)
        if not hits:
            unmatched.append(row[id_col].strip())
    if not found:
        raise UserError("labels file {} names none of the {} images under {} (e.g. {} is not there)".format(
            labels_file, len(paths), root, _examples(unmatched, 1)))
    image_set = _labeled_set(paths, found, class_names=synsets, labels_file=labels_file, where=where)
    if unmatched:
        image_set.notes.append("{} of the rows of {} have no image under {}".format(
            len(unmatched), os.path.basename(labels_file), root))
    return image_set


def _labeled_set(paths: List[str], found: Dict[str, int], class_names, labels_file: str,
                 where: Optional[Dict[str, str]] = None) -> ImageSet:
    kept = [p for p in paths if p in found]
    notes = []
    if len(kept) < len(paths):
        notes.append("{} images under the folder have no label in {} and are left out".format(
            len(paths) - len(kept), os.path.basename(labels_file)))
    return ImageSet(paths=kept, labels=[found[p] for p in kept], class_names=class_names, notes=notes,
                    label_sources=[(where or {}).get(p, "") for p in kept])


def _examples(items: Sequence[str], count: int = 3) -> str:
    shown = ", ".join(items[:count])
    return shown + (", ..." if len(items) > count else "")


# -- sampling --------------------------------------------------------------------------------------------

def stratified_sample(images: ImageSet, num_images: int, seed: int = 0) -> ImageSet:
    """A deterministic ``num_images`` sample, as even across classes as their sizes allow, in input order.

    Each class draws a prefix of its own seeded permutation, so a larger sample contains a smaller one.
    ``num_images >= len(images)`` keeps everything. Unlabeled sets get a plain seeded sample.
    """
    if int(num_images) <= 0:
        raise UserError("the number of calibration images must be positive, got {}".format(num_images))
    if not 0 <= int(seed) < 2 ** 32:
        raise UserError("seed must be in [0, 2**32), got {}".format(seed))
    if num_images >= len(images):
        return images.subset(range(len(images)))
    if images.labels is None:
        chosen = np.random.RandomState(seed).permutation(len(images))[:num_images]
        return images.subset(sorted(chosen.tolist()))
    members: Dict[int, List[int]] = {}
    for position, label in enumerate(images.labels):
        members.setdefault(label, []).append(position)
    quotas = _class_quotas({label: len(m) for label, m in members.items()}, num_images, seed)
    chosen = []
    for label, quota in quotas.items():
        order = np.random.RandomState([seed, label]).permutation(len(members[label]))
        chosen.extend(members[label][i] for i in order[:quota])
    return images.subset(sorted(chosen))


def measuring_sample(images: ImageSet, num_images: int, seed: int = 0,
                     keep: Optional[Sequence[bool]] = None) -> ImageSet:
    """The images that measure a model: like :func:`stratified_sample`, but each class draws from the END of the
    same seeded permutation whose prefix calibrate takes (calibration images, judging images). From one folder
    with room for both, the two never overlap, so leaving out what judged a model (``keep`` False) changes
    nothing: a model shows one figure whichever other models are measured beside it (issue 28)."""
    if int(num_images) <= 0:
        raise UserError("the number of images must be positive, got {}".format(num_images))
    if not 0 <= int(seed) < 2 ** 32:
        raise UserError("seed must be in [0, 2**32), got {}".format(seed))
    allowed = [True] * len(images) if keep is None else [bool(k) for k in keep]
    if images.labels is None:
        order = np.random.RandomState(seed).permutation(len(images))[::-1]
        chosen = [int(i) for i in order if allowed[i]][:num_images]
        return images.subset(sorted(chosen))
    members: Dict[int, List[int]] = {}
    for position, label in enumerate(images.labels):
        members.setdefault(label, []).append(position)
    backwards = {label: [m[i] for i in np.random.RandomState([seed, label]).permutation(len(m))[::-1]
                         if allowed[m[i]]] for label, m in members.items()}
    backwards = {label: order for label, order in backwards.items() if order}
    total = sum(len(order) for order in backwards.values())
    if not total:
        return images.subset([])
    if num_images >= total:
        return images.subset(sorted(i for order in backwards.values() for i in order))
    quotas = _class_quotas({label: len(order) for label, order in backwards.items()}, num_images, seed)
    return images.subset(sorted(i for label, quota in quotas.items() for i in backwards[label][:quota]))


def _class_quotas(counts: Dict[int, int], total: int, seed: int) -> Dict[int, int]:
    """Split ``total`` (< sum of counts) evenly over classes; small classes give their unused share to others."""
    quotas = {label: 0 for label in sorted(counts)}
    remaining = total
    open_classes = sorted(counts)
    while remaining > 0:
        share = remaining // len(open_classes)
        if share == 0:  # fewer images left than open classes: a seeded choice of which classes get one more
            for label in np.random.RandomState(seed).permutation(open_classes)[:remaining]:
                quotas[int(label)] += 1
            break
        for label in open_classes:
            take = min(share, counts[label] - quotas[label])
            quotas[label] += take
            remaining -= take
        open_classes = [label for label in open_classes if quotas[label] < counts[label]]
    return quotas


# -- decoding and the cache ------------------------------------------------------------------------------

@dataclass
class LoadedImages:
    """Preprocessed images ready for calibration, and what could not be read."""

    array: np.ndarray                    # (N, 3, S, S) float32, in the order of `paths`
    labels: Optional[np.ndarray]         # (N,) int64 or None
    paths: List[str]                     # the files that decoded
    skipped: List[Tuple[str, str]]       # (path, reason) for unreadable files
    cache_path: Optional[str] = None     # the cache file used or written, if any
    cache_hit: bool = False
    notes: List[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """One line for the end of a run: how many images, and which were skipped and why."""
        text = "{} images ready ({})".format(len(self), "from cache" if self.cache_hit else "decoded")
        if self.skipped:
            text += "; skipped {} unreadable: {}".format(len(self.skipped), _examples(
                ["{} ({})".format(path, reason) for path, reason in self.skipped]))
        return text


def default_cache_dir() -> str:
    """``$ECA_DEPLOY_CACHE/calib``, else ``$XDG_CACHE_HOME/eca-deploy/calib``, else ``~/.cache/eca-deploy/calib``."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "eca-deploy")
    return os.path.join(root, "calib")


def cache_key(paths: Sequence[str], spec: PreprocessSpec) -> str:
    """A hash of the files (path, size, mtime, in order), the preprocessing spec and the Pillow version."""
    digest = hashlib.sha256()
    header = {"format": CACHE_FORMAT, "spec": spec.to_metadata(), "pillow": PIL.__version__}
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8"))
    for path in paths:
        try:
            stat = os.stat(path)
            signature = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            signature = [-1, -1]
        digest.update(json.dumps([os.path.abspath(path)] + signature).encode("utf-8") + b"\n")
    return digest.hexdigest()[:32]


def decode_crop(path: str, spec: PreprocessSpec) -> np.ndarray:
    """One file to its (S, S, 3) uint8 crop: decode, convert to RGB, resize the shorter side, center crop."""
    return np.asarray(resize_and_crop(decode_image(path, spec.resize_size), spec), dtype=np.uint8)


def _decode_one(path: str, spec: PreprocessSpec) -> Tuple[Optional[np.ndarray], str]:
    try:
        return decode_crop(path, spec), ""
    except Exception as exc:  # noqa: BLE001  (a corrupt file must never abort a calibration run)
        reason = str(exc) or type(exc).__name__
        prefix = "cannot decode image {}: ".format(path)
        return None, reason[len(prefix):] if reason.startswith(prefix) else reason


def _decode_all(paths: Sequence[str], spec: PreprocessSpec, workers: int, executor: str, progress: bool):
    """Decode in parallel; returns (crops of the decoded files, their indices, [(index, reason)] skipped)."""
    size = spec.input_size
    crops = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    decoded, skipped = [], []
    task = functools.partial(_decode_one, spec=spec)
    bar = progress_bar(len(paths), "decoding images", enabled=progress)
    with bar, _make_pool(workers, executor) as pool:
        for index, (crop, reason) in enumerate(pool.map(task, paths, chunksize=8)):
            if crop is None:
                skipped.append((index, reason))
            else:
                crops[len(decoded)] = crop
                decoded.append(index)
            bar.update(1)
    return crops[:len(decoded)], decoded, skipped


class _InlinePool:
    """``workers <= 1``: decode in this thread, without pool overhead."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(function, items, chunksize=1):
        return map(function, items)


def _make_pool(workers: int, executor: str):
    if executor not in EXECUTORS:
        raise UserError("executor must be one of {}, got {!r}".format(", ".join(EXECUTORS), executor))
    if workers <= 1:
        return _InlinePool()
    if executor == "process":
        return ProcessPoolExecutor(max_workers=workers)
    return ThreadPoolExecutor(max_workers=workers)


def _read_cache(path: str, key: str, count: int, size: int):
    """The cached (crops, decoded indices, skipped) or None when absent, corrupt or not for these files."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key or int(data["format"]) != CACHE_FORMAT:
                return None
            crops, decoded = data["crops"], data["decoded"].astype(np.int64)
            skipped_idx, reasons = data["skipped"].astype(np.int64), data["reasons"]
            if (crops.dtype != np.uint8 or crops.shape != (len(decoded), size, size, 3)
                    or len(skipped_idx) != len(reasons) or len(decoded) + len(skipped_idx) != count
                    or sorted(decoded.tolist() + skipped_idx.tolist()) != list(range(count))):
                return None
            return crops, decoded.tolist(), list(zip(skipped_idx.tolist(), (str(r) for r in reasons)))
    except Exception:  # noqa: BLE001  (any unreadable cache file is rebuilt, never trusted)
        return None


def _write_cache(path: str, key: str, crops: np.ndarray, decoded: List[int], skipped) -> Optional[str]:
    """Write atomically; returns an error text instead of failing, since the cache is only a speed-up."""
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:  # a file object, so numpy does not append .npz to the temp name
                np.savez(handle, key=np.array(key), format=np.array(CACHE_FORMAT), crops=crops,
                         decoded=np.array(decoded, dtype=np.int64),
                         skipped=np.array([i for i, _ in skipped], dtype=np.int64),
                         reasons=np.array([r for _, r in skipped], dtype=str))
    except (OSError, UserError) as exc:
        return "could not write the image cache {}: {}".format(path, exc)
    _prune_cache(os.path.dirname(path), keep=path)
    return None


def _prune_cache(directory: str, keep: str) -> None:
    """Delete the least recently used cache files beyond CACHE_BUDGET_BYTES (only files this module wrote)."""
    budget = CACHE_BUDGET_BYTES
    try:
        files = [entry for entry in os.scandir(directory) if _is_cache_name(entry.name)]
        files.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
        total = 0
        for entry in files:
            total += entry.stat().st_size
            if total > budget and os.path.abspath(entry.path) != os.path.abspath(keep):
                os.unlink(entry.path)
    except OSError:
        pass


def _is_cache_name(name: str) -> bool:
    return re.match(r"^calib-[0-9a-f]{32}\.npz$", name) is not None


def normalize_crops(crops: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """(N, S, S, 3) uint8 crops to the (N, 3, S, S) float32 batch, bit-identical to preprocess_image."""
    out = np.empty((len(crops), 3, spec.input_size, spec.input_size), dtype=np.float32)
    for index, crop in enumerate(crops):
        out[index] = to_model_input(crop, spec)
    return out


def load_images(images: ImageSet, spec: PreprocessSpec, workers: int = 2, cache_dir=None, use_cache: bool = True,
                progress: bool = True, executor: str = "thread") -> LoadedImages:
    """Decode and preprocess ``images`` (in parallel, or from the cache); unreadable files are skipped.

    The cache holds the uint8 crops, a quarter of the float32 size; normalizing them again is exact and takes
    a fraction of the decode time. ``executor``: "thread" (measured faster here: PIL releases the GIL while
    decoding and resizing) or "process".
    """
    size = spec.input_size
    # uint8 crops plus the float32 batch made from them: refuse a sample the machine cannot hold, up front
    check_memory(len(images) * size * size * 3 * (1 + 4), "{} images at {}x{}".format(len(images), size, size),
                 "use a smaller --num-images")
    path = None
    cached = None
    notes = list(images.notes)
    if use_cache:
        key = cache_key(images.paths, spec)
        path = os.path.join(os.fspath(cache_dir) if cache_dir else default_cache_dir(), "calib-{}.npz".format(key))
        cached = _read_cache(path, key, len(images), spec.input_size)
    if cached is not None:
        crops, decoded, skipped = cached
        _touch(path)
    else:
        crops, decoded, skipped = _decode_all(images.paths, spec, max(int(workers), 0), executor, progress)
        if use_cache and decoded:
            error = _write_cache(path, key, crops, decoded, skipped)
            if error:
                notes.append(error)
    loaded = LoadedImages(
        array=normalize_crops(crops, spec),
        labels=None if images.labels is None else np.array([images.labels[i] for i in decoded], dtype=np.int64),
        paths=[images.paths[i] for i in decoded],
        skipped=[(images.paths[i], reason) for i, reason in skipped],
        cache_path=path,
        cache_hit=cached is not None,
        notes=notes,
    )
    if progress and loaded.skipped:
        print(loaded.summary(), file=sys.stderr)
    return loaded


def _touch(path: str) -> None:
    try:
        os.utime(path)  # the pruning is least-recently-used
    except OSError:
        pass


def image_digest(path: str) -> str:
    """What identifies an image file wherever it is copied: its size and the start of its sha256."""
    from deploy.fileio import sha256_file
    return "{}-{}".format(os.path.getsize(path), sha256_file(path)[:16])


def image_digests(paths: Sequence[str]) -> List[str]:
    return sorted({image_digest(path) for path in paths})


def without_digests(images: ImageSet, digests) -> Tuple[ImageSet, int]:
    """``images`` less those whose digest is in ``digests`` (images that calibrated or judged a model, which
    must not measure it), and how many went. Only files of a listed size are hashed, so a large folder is cheap."""
    digests = set(digests or ())
    if not digests:
        return images, 0
    sizes = {int(d.split("-", 1)[0]) for d in digests if d.split("-", 1)[0].isdigit()}
    keep = [i for i, path in enumerate(images.paths)
            if os.path.getsize(path) not in sizes or image_digest(path) not in digests]
    return images.subset(keep), len(images) - len(keep)


def _without_what_chose(found: ImageSet, exclude, data_dir) -> Tuple[ImageSet, str]:
    """``found`` less the images that calibrated or judged a model (their digests ``exclude``), and the note that
    says how many were left out ("" for none); UserError when nothing is left to measure with."""
    kept, left_out = without_digests(found, exclude)
    if not left_out:
        return kept, ""
    if not len(kept):
        raise UserError("every image in {} calibrated or judged the model, so none can measure it; give other "
                        "images".format(os.fspath(data_dir)))
    return kept, ("left out {} image(s) of {} that calibrated or judged the INT8 model(s): a figure measured on "
                  "them would read high".format(left_out, os.fspath(data_dir)))


def _decoded(images: ImageSet, data_dir, spec, **load_options) -> LoadedImages:
    """load_images, or UserError when not one sampled image could be decoded."""
    loaded = load_images(images, spec, **load_options)
    if not len(loaded):
        path, reason = loaded.skipped[0]
        raise UserError("none of the {} images sampled from {} could be decoded (e.g. {}: {})".format(
            len(images), os.fspath(data_dir), path, reason))
    return loaded


def load_dataset(data_dir, spec: PreprocessSpec, labels_file=None, num_images: int = DEFAULT_NUM_IMAGES,
                 seed: int = 0, workers: int = 2, cache_dir=None, progress: bool = True, use_cache: bool = True,
                 executor: str = "thread", num_classes: Optional[int] = None, exclude=None,
                 measuring: bool = False) -> LoadedImages:
    """discover + stratified_sample + load_images; UserError when no image could be decoded, or (given
    ``num_classes``) when a label is not a class of the model. ``exclude``: image digests left out before the
    sample (``without_digests``), said in a note. ``measuring``: images that measure models (benchmark-engine,
    the bundle), drawn by :func:`measuring_sample` from the other end of what calibrates and judges."""
    found = discover(data_dir, labels_file)
    if num_classes is not None:
        found.check_fits(num_classes)  # all of them, before sampling: a bad line is a bad file
    kept, note = _without_what_chose(found, exclude, data_dir)
    if measuring:  # the order stays the whole folder's, so the measured end never moves with what was left out
        kept_paths = set(kept.paths)
        images = measuring_sample(found, num_images, seed, [p in kept_paths for p in found.paths])
    else:
        images = stratified_sample(kept, num_images, seed)
    if note:
        images.notes.append(note)
    return _decoded(images, data_dir, spec, workers=workers, cache_dir=cache_dir, use_cache=use_cache,
                    progress=progress, executor=executor)
