"""data.datasets on real images: the digits ImageFolder trees and scikit-image photos."""
import collections
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import data.datasets as data
from data.datasets import (
    ImageSet, cache_key, default_cache_dir, discover, imagenet_synsets, load_dataset, load_images,
    stratified_sample,
)
from deploy.errors import UserError
from deploy.preprocess import PreprocessSpec, preprocess_file

SPEC = PreprocessSpec.for_input_size(32)


@pytest.fixture(scope="module")
def photos():
    from skimage import data as skdata
    return {name: Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((160, 120))
            for name in ("astronaut", "chelsea", "coffee", "rocket", "colorwheel")}


def _copy_digits(source_dir, target, count, rename=None):
    """The first ``count`` digit images of ``source_dir`` (an ImageFolder) copied flat into ``target``."""
    os.makedirs(target, exist_ok=True)
    copied = []
    for path in sorted(data.walk_images(source_dir))[:count]:
        name = rename(path) if rename else os.path.basename(os.path.dirname(path)) + "_" + os.path.basename(path)
        shutil.copy(path, os.path.join(target, name))
        copied.append(os.path.join(target, name))
    return copied


def _one_line_user_error(call, *match):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for text in match:
        assert text in message, message
    return message


@pytest.fixture
def counting_decoder(monkeypatch):
    """Counts decode_crop calls (the loader's only way to decode), to prove the cache skipped decoding."""
    calls = collections.Counter()
    real = data.decode_crop

    def counted(path, spec):
        calls["decode"] += 1
        return real(path, spec)

    monkeypatch.setattr(data, "decode_crop", counted)
    return calls


# -- discovery --------------------------------------------------------------------------------------------

def test_imagefolder_labels_follow_the_folder_names(digits_split):
    images = discover(digits_split[1])
    assert images.class_names == [str(d) for d in range(10)]
    assert len(images) == len(data.walk_images(digits_split[1])) > 500
    assert all(int(os.path.basename(os.path.dirname(p))) == label for p, label in zip(images.paths, images.labels))


def test_imagefolder_classes_sort_like_torchvision(tmp_path, photos):
    # created out of order; a hidden folder is not a class; an empty class folder still takes its index
    for synset, photo in (("zebra", "chelsea"), ("apple", "coffee"), ("banana", "astronaut")):
        os.makedirs(str(tmp_path / synset))
        photos[photo].save(str(tmp_path / synset / "{}.JPEG".format(photo)))
    os.makedirs(str(tmp_path / ".ipynb_checkpoints"))
    photos["rocket"].save(str(tmp_path / ".ipynb_checkpoints" / "x.jpg"))
    os.makedirs(str(tmp_path / "cherry"))
    images = discover(str(tmp_path))
    assert images.class_names == ["apple", "banana", "cherry", "zebra"]
    assert [(os.path.basename(p), label) for p, label in zip(images.paths, images.labels)] == [
        ("coffee.JPEG", 0), ("astronaut.JPEG", 1), ("chelsea.JPEG", 3)]
    assert any("hold no images" in note for note in images.notes)


def test_flat_folder_with_nested_and_symlinked_folders_and_any_case(tmp_path, digits_split, photos):
    flat = tmp_path / "flat"
    _copy_digits(digits_split[1], str(flat), 4)
    photos["chelsea"].save(str(flat / "cat.JPEG"))
    photos["coffee"].save(str(flat / "cup.Jpg"))
    photos["rocket"].save(str(flat / "rocket.PNG"))
    photos["astronaut"].save(str(flat / "astronaut.WebP"))
    (flat / "notes.txt").write_text("not an image")
    nested = tmp_path / "elsewhere" / "deeper"
    nested.mkdir(parents=True)
    photos["colorwheel"].save(str(nested / "wheel.BMP"))
    (flat / "sub").mkdir()
    os.symlink(str(nested), str(flat / "sub" / "linked_folder"))
    os.symlink(str(flat / "cat.JPEG"), str(flat / "sub" / "linked_cat.jpeg"))

    images = discover(str(flat))
    assert images.labels is None and images.class_names is None
    assert any("read as one unlabeled folder" in note for note in images.notes)
    names = sorted(os.path.basename(p) for p in images.paths)
    assert names == sorted([os.path.basename(p) for p in os.listdir(str(flat)) if p != "notes.txt" and p != "sub"]
                           + ["wheel.BMP", "linked_cat.jpeg"])
    loaded = load_images(images, SPEC, cache_dir=str(tmp_path / "cache"), progress=False)
    assert len(loaded) == len(images) and not loaded.skipped


def test_flat_folder_with_a_listing(tmp_path, digits_split):
    flat = tmp_path / "val"
    files = _copy_digits(digits_split[1], str(flat), 6)
    os.makedirs(str(flat / "part2"))
    shutil.move(files[5], str(flat / "part2" / "moved.png"))
    labels = tmp_path / "labels.txt"
    labels.write_text("# file class\n{} 3\n./{}\t4\n\n{},7\n{} 1\n{} 9\n".format(
        os.path.basename(files[0]), os.path.basename(files[1]), os.path.basename(files[2]),
        str(flat / "part2" / "moved.png"),                 # an absolute path
        os.path.splitext(os.path.basename(files[3]))[0]))  # by stem, without extension
    images = discover(str(flat), str(labels))
    got = {os.path.basename(p): label for p, label in zip(images.paths, images.labels)}
    assert got == {os.path.basename(files[0]): 3, os.path.basename(files[1]): 4, os.path.basename(files[2]): 7,
                   "moved.png": 1, os.path.basename(files[3]): 9}
    assert images.class_names is None
    assert any("1 images under the folder have no label" in note for note in images.notes)
    labels.write_text("part2/moved.png 2\n")  # relative to the folder
    only = discover(str(flat), str(labels))
    assert only.paths == [str(flat / "part2" / "moved.png")] and only.labels == [2]


def test_listing_errors(tmp_path, digits_split):
    flat = tmp_path / "val"
    files = _copy_digits(digits_split[1], str(flat), 3)
    labels = tmp_path / "labels.txt"
    labels.write_text("{} 1\nmissing_a.png 2\nmissing_b.png 3\n".format(os.path.basename(files[0])))
    _one_line_user_error(lambda: discover(str(flat), str(labels)), "names 2 file(s) not found", "missing_a.png")
    labels.write_text("{} one\n".format(os.path.basename(files[0])))
    _one_line_user_error(lambda: discover(str(flat), str(labels)), "line 1", "<class index>")
    labels.write_text("{} 1\n{} 2\n".format(os.path.basename(files[0]), os.path.basename(files[0])))
    _one_line_user_error(lambda: discover(str(flat), str(labels)), "two classes")
    labels.write_text("other_folder/{} 1\n".format(os.path.basename(files[0])))  # a folder part must match
    _one_line_user_error(lambda: discover(str(flat), str(labels)), "not found", "other_folder/")
    os.makedirs(str(flat / "a"))
    os.makedirs(str(flat / "b"))
    shutil.copy(files[1], str(flat / "a" / "same.png"))
    shutil.copy(files[2], str(flat / "b" / "same.png"))
    labels.write_text("same.png 1\n")
    _one_line_user_error(lambda: discover(str(flat), str(labels)), "matches 2 files", "relative")
    _one_line_user_error(lambda: discover(str(flat), str(tmp_path / "absent.txt")), "no such labels file")


def _imagenet_val(tmp_path, photos, count):
    folder = tmp_path / "ILSVRC" / "val"
    folder.mkdir(parents=True)
    for i, photo in enumerate(sorted(photos)[:count]):
        photos[photo].save(str(folder / "ILSVRC2012_val_{:08d}.JPEG".format(i + 1)))
    return folder


def test_imagenet_loc_val_solution_csv(tmp_path, photos):
    folder = _imagenet_val(tmp_path, photos, 3)
    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000003,n15075141 1 2 3 4\n"
        "ILSVRC2012_val_00000001,n02119789 255 142 454 329 n02119789 44 21 322 295\n"
        "ILSVRC2012_val_00000002,n01440764 10 20 30 40 n01443537 1 2 3 4\n"
        "ILSVRC2012_val_00008726,n01443537 5 6 7 8\n")  # not in this subset of the validation set
    images = discover(str(folder), str(csv_path))
    assert images.class_names == imagenet_synsets() and len(images.class_names) == 1000
    assert [os.path.basename(p) for p in images.paths] == [
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    assert images.labels == [278, 0, 999]  # kit fox, tench, toilet tissue in the sorted synset order
    assert any("1 of the rows" in note for note in images.notes)


def test_imagenet_csv_that_matches_nothing_or_is_malformed(tmp_path, photos):
    folder = _imagenet_val(tmp_path, photos, 2)
    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00009999,n01440764 1 2 3 4\n")
    _one_line_user_error(lambda: discover(str(folder), str(csv_path)), "names none of the 2 images")
    csv_path.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n99999999 1 2 3 4\n")
    _one_line_user_error(lambda: discover(str(folder), str(csv_path)), "line 2")


def test_bad_folders_are_one_line_user_errors(tmp_path):
    _one_line_user_error(lambda: discover(str(tmp_path / "absent")), "no such data folder")
    (tmp_path / "file.jpg").write_bytes(b"x")
    _one_line_user_error(lambda: discover(str(tmp_path / "file.jpg")), "is not a folder")
    (tmp_path / "empty").mkdir()
    _one_line_user_error(lambda: discover(str(tmp_path / "empty")), "is empty")
    other = tmp_path / "no_images"
    (other / "class_a").mkdir(parents=True)
    (other / "class_a" / "readme.txt").write_text("x")
    (other / "labels.csv").write_text("x")
    _one_line_user_error(lambda: discover(str(other)), "no images", ".jpeg")
    _one_line_user_error(lambda: discover(str(other / "class_a"), str(other / "labels.csv")), "no images")


# -- sampling ---------------------------------------------------------------------------------------------

def test_stratified_sample_is_deterministic_balanced_and_nested(digits_split):
    images = discover(digits_split[0])
    first, again = stratified_sample(images, 100, seed=3), stratified_sample(images, 100, seed=3)
    assert first.paths == again.paths and first.labels == again.labels
    assert collections.Counter(first.labels) == {label: 10 for label in range(10)}
    assert first.paths == sorted(first.paths)  # input order kept
    assert stratified_sample(images, 100, seed=4).paths != first.paths
    odd = stratified_sample(images, 37, seed=3)
    counts = collections.Counter(odd.labels)
    assert len(odd) == 37 and max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 10
    assert set(stratified_sample(images, 50, seed=3).paths) <= set(first.paths)


def test_stratified_sample_gives_a_small_class_share_to_the_others():
    labels = [0] * 2 + [1] * 50 + [2] * 50
    images = ImageSet(paths=["img{:03d}.png".format(i) for i in range(len(labels))], labels=labels,
                      class_names=["a", "b", "c"])
    counts = collections.Counter(stratified_sample(images, 30, seed=0).labels)
    assert counts == {0: 2, 1: 14, 2: 14}


def test_sample_of_everything_and_unlabeled_sample(digits_split):
    images = discover(digits_split[1])
    whole = stratified_sample(images, 10 ** 6)
    assert whole.paths == images.paths and whole.labels == images.labels
    unlabeled = ImageSet(paths=images.paths, labels=None, class_names=None)
    sample = stratified_sample(unlabeled, 20, seed=1)
    assert len(sample) == 20 and sample.labels is None and sample.paths == sorted(sample.paths)
    assert sample.paths == stratified_sample(unlabeled, 20, seed=1).paths
    assert sample.paths != stratified_sample(unlabeled, 20, seed=2).paths
    _one_line_user_error(lambda: stratified_sample(images, 0), "must be positive")


# -- loading, skipping and the cache ----------------------------------------------------------------------

@pytest.fixture
def messy_folder(tmp_path, digits_split, photos):
    """An ImageFolder tree with good images, a truncated JPEG, a corrupt PNG, an empty file and a dead link."""
    root = tmp_path / "messy"
    for label in ("0", "1"):
        _copy_digits(os.path.join(digits_split[1], label), str(root / label), 5,
                     rename=lambda p: os.path.basename(p))
    photos["chelsea"].save(str(root / "1" / "cat.jpg"), quality=90)
    full = (root / "1" / "cat.jpg").read_bytes()
    (root / "0" / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (root / "0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (root / "1" / "empty.JPEG").write_bytes(b"")
    os.symlink(str(tmp_path / "gone.png"), str(root / "1" / "dead_link.png"))
    return root


def test_unreadable_files_are_skipped_counted_and_reported(messy_folder, tmp_path, capsys):
    images = discover(str(messy_folder))
    assert len(images) == 14  # the dead link is no regular file: left out as the folder is listed, and counted
    assert any("skipped 1 file(s) that are not regular files" in note and "dead_link.png, a broken link" in note
               for note in images.notes), images.notes
    loaded = load_images(images, SPEC, workers=2, cache_dir=str(tmp_path / "cache"), progress=True)
    skipped = sorted(os.path.basename(path) for path, _ in loaded.skipped)
    assert skipped == ["corrupt.png", "empty.JPEG", "truncated.jpg"]
    reasons = {os.path.basename(path): reason for path, reason in loaded.skipped}
    assert "truncated" in reasons["truncated.jpg"] and all(reasons.values())
    assert not any(reason.startswith("cannot decode image") for reason in reasons.values())
    assert "skipped 3 unreadable" in capsys.readouterr().err
    assert loaded.array.shape == (11, 3, 32, 32) and loaded.array.dtype == np.float32
    assert loaded.labels.dtype == np.int64
    assert [int(os.path.basename(os.path.dirname(p))) for p in loaded.paths] == loaded.labels.tolist()
    for row, path in zip(loaded.array, loaded.paths):  # cached crops + batch normalization are exact
        assert np.array_equal(row, preprocess_file(path, SPEC))


def test_second_run_comes_from_the_cache(messy_folder, tmp_path, counting_decoder):
    images = discover(str(messy_folder))
    cache = str(tmp_path / "cache")
    first = load_images(images, SPEC, workers=2, cache_dir=cache, progress=False)
    assert counting_decoder["decode"] == 14 and not first.cache_hit and os.path.isfile(first.cache_path)
    second = load_images(images, SPEC, workers=2, cache_dir=cache, progress=False)
    assert counting_decoder["decode"] == 14, "the second run decoded again"
    assert second.cache_hit and second.cache_path == first.cache_path
    assert np.array_equal(second.array, first.array) and np.array_equal(second.labels, first.labels)
    assert second.paths == first.paths and second.skipped == first.skipped
    without = load_images(images, SPEC, workers=1, cache_dir=cache, use_cache=False, progress=False)
    assert counting_decoder["decode"] == 28 and np.array_equal(without.array, first.array)


def test_cache_key_follows_the_spec_and_the_files(messy_folder, tmp_path, counting_decoder):
    paths = discover(str(messy_folder)).paths
    key = cache_key(paths, SPEC)
    assert cache_key(list(paths), PreprocessSpec.for_input_size(32)) == key
    assert cache_key(paths, PreprocessSpec.for_input_size(48)) != key
    assert cache_key(paths, PreprocessSpec.for_input_size(32, interpolation="bicubic")) != key
    assert cache_key(paths, PreprocessSpec.for_input_size(32, mean=(0.5, 0.5, 0.5))) != key
    assert cache_key(paths[:-1], SPEC) != key
    assert cache_key(paths[::-1], SPEC) != key
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    assert cache_key(paths, SPEC) != key
    good = [p for p in paths if p.endswith(".png") and "corrupt" not in p and "dead" not in p]
    cache = str(tmp_path / "cache")
    images = ImageSet(paths=good, labels=None, class_names=None)
    load_images(images, SPEC, cache_dir=cache, progress=False)
    Image.open(good[1]).transpose(Image.FLIP_LEFT_RIGHT).save(good[1])  # the content changes: size or mtime too
    again = load_images(images, SPEC, cache_dir=cache, progress=False)
    assert not again.cache_hit and counting_decoder["decode"] == 2 * len(good)
    assert np.array_equal(again.array[1], preprocess_file(good[1], SPEC))


def test_corrupt_cache_file_is_ignored_and_rebuilt(digits_split, tmp_path, counting_decoder):
    images = stratified_sample(discover(digits_split[1]), 20)
    cache = str(tmp_path / "cache")
    first = load_images(images, SPEC, cache_dir=cache, progress=False)
    for garbage in (b"", b"PK\x03\x04 not really a zip", open(first.cache_path, "rb").read()[:5000]):
        with open(first.cache_path, "wb") as handle:
            handle.write(garbage)
        rebuilt = load_images(images, SPEC, cache_dir=cache, progress=False)
        assert not rebuilt.cache_hit and np.array_equal(rebuilt.array, first.array)
    assert counting_decoder["decode"] == 4 * 20
    assert load_images(images, SPEC, cache_dir=cache, progress=False).cache_hit
    assert [name for name in os.listdir(cache) if name.endswith(".part")] == []


def test_cache_location_and_an_unwritable_cache(digits_split, tmp_path, monkeypatch):
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "env_cache"))
    assert default_cache_dir() == str(tmp_path / "env_cache" / "calib")
    monkeypatch.delenv("ECA_DEPLOY_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == str(tmp_path / "home" / ".cache" / "eca-deploy" / "calib")
    monkeypatch.setenv("ECA_DEPLOY_CACHE", str(tmp_path / "env_cache"))
    images = stratified_sample(discover(digits_split[1]), 10)
    loaded = load_images(images, SPEC, progress=False)
    assert os.path.dirname(loaded.cache_path) == str(tmp_path / "env_cache" / "calib")
    (tmp_path / "a_file").write_text("x")
    blocked = load_images(images, SPEC, cache_dir=str(tmp_path / "a_file" / "cache"), progress=False)
    assert len(blocked) == 10 and any("could not write the image cache" in note for note in blocked.notes)


def test_thread_and_process_pools_agree(digits_split, tmp_path):
    images = stratified_sample(discover(digits_split[1]), 24)
    threads = load_images(images, SPEC, workers=2, use_cache=False, progress=False, executor="thread")
    processes = load_images(images, SPEC, workers=2, use_cache=False, progress=False, executor="process")
    assert np.array_equal(threads.array, processes.array) and threads.paths == processes.paths


def test_load_dataset_end_to_end(digits_split, tmp_path):
    loaded = load_dataset(digits_split[1], SPEC, num_images=50, seed=0, cache_dir=str(tmp_path), progress=False)
    assert loaded.array.shape == (50, 3, 32, 32)
    assert collections.Counter(loaded.labels.tolist()) == {label: 5 for label in range(10)}
    assert "50 images ready" in loaded.summary()


def test_load_dataset_fails_only_when_nothing_decodes(tmp_path):
    root = tmp_path / "all_bad"
    root.mkdir()
    for name in ("a.jpg", "b.png", "c.webp"):
        (root / name).write_bytes(b"junk")
    _one_line_user_error(lambda: load_dataset(str(root), SPEC, cache_dir=str(tmp_path / "c"), progress=False),
                         "none of the 3 images", "a.jpg")


def test_old_cache_files_are_pruned(digits_split, tmp_path, monkeypatch):
    images = discover(digits_split[1])
    cache = tmp_path / "cache"
    (cache).mkdir()
    (cache / "unrelated.npz").write_bytes(b"x" * 100000)  # not ours: never deleted
    monkeypatch.setattr(data, "CACHE_BUDGET_BYTES", 1)
    paths = []
    for seed in range(3):
        loaded = load_images(stratified_sample(images, 10, seed=seed), SPEC, cache_dir=str(cache), progress=False)
        paths.append(loaded.cache_path)
    assert sorted(os.listdir(str(cache))) == sorted(["unrelated.npz", os.path.basename(paths[-1])])


def test_imagenet_synset_folders_keep_their_imagenet_index(tmp_path):
    # A 2-class subset of ImageNet must still be scored against a 1000-class model's indices.
    from PIL import Image
    from data.datasets import discover, imagenet_synsets
    for synset in ("n02123045", "n07920052"):  # tabby cat (281), espresso (967)
        (tmp_path / synset).mkdir()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(str(tmp_path / synset / "a.JPEG"))
    found = discover(str(tmp_path))
    assert sorted(set(found.labels)) == [281, 967]
    assert found.class_names == imagenet_synsets()


def test_measuring_images_come_from_the_other_end_so_leaving_out_the_judges_changes_nothing():
    # issue 28: benchmark-engine gave one FP32 model 96.88% or 99.22% depending on whether an INT8 model whose
    # judging images it had to leave out was listed beside it
    from data.datasets import ImageSet, measuring_sample
    labeled = ImageSet(["img{:03d}".format(i) for i in range(200)], [i % 10 for i in range(200)], None)
    unlabeled = ImageSet(list(labeled.paths), None, None)
    for images in (labeled, unlabeled):
        judges = set(data.stratified_sample(images, 90, seed=0).paths)  # what calibrate --holdout-data takes
        measured = measuring_sample(images, 100, seed=0)
        assert len(measured) == 100 and not judges & set(measured.paths)
        keep = [p not in judges for p in images.paths]
        assert measuring_sample(images, 100, seed=0, keep=keep).paths == measured.paths
        if images.labels is not None:
            assert set(collections.Counter(measured.labels).values()) == {10}
        # without room for both, the judges are still never measured
        crowded = measuring_sample(images, 150, seed=0, keep=keep)
        assert len(crowded) == 110 and not judges & set(crowded.paths)
