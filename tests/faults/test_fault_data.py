"""Bad images and labels: bounded decoding (skipped and counted), labels that name their bad line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data.datasets import discover, load_images
from deploy.preprocess import PreprocessSpec, decode_image
from tests.faults.conftest import assert_user_error, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEMORY_BOUND_MB = 300


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory):
    """Small files that decode to huge images: extreme aspect ratios, 100 megapixels, a pixel bomb."""
    folder = tmp_path_factory.mktemp("hostile")
    Image.new("L", (100000, 1)).save(str(folder / "wide.png"))
    Image.new("L", (1, 400000)).save(str(folder / "tall.png"))
    Image.new("L", (6000, 6000)).save(str(folder / "big_gray.png"))        # above the decode limit
    Image.new("L", (10000, 10000), 90).save(str(folder / "photo_100mp.jpg"), quality=80)
    return folder


def test_decoding_any_of_them_stays_within_the_memory_bound(hostile_images):
    """Peak RSS of decoding + preprocessing every hostile image, over the process before it, in a child."""
    code = (
        "import json, resource, sys\n"
        "from deploy.preprocess import PreprocessSpec, preprocess_file\n"
        "from deploy.errors import UserError\n"
        "spec = PreprocessSpec()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "outcome = {}\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        outcome[path] = list(preprocess_file(path, spec).shape)\n"
        "    except UserError as exc:\n"
        "        outcome[path] = str(exc)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'over_kb': peak - base, 'outcome': outcome}))\n")
    paths = sorted(str(hostile_images / name) for name in os.listdir(str(hostile_images)))
    proc = subprocess.run([sys.executable, "-c", code] + paths, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=dict(os.environ, PYTHONPATH=ROOT),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["over_kb"] / 1024 < MEMORY_BOUND_MB, report
    outcome = {os.path.basename(k): v for k, v in report["outcome"].items()}
    assert outcome["photo_100mp.jpg"] == [3, 224, 224]  # decoded smaller (JPEG draft), not refused
    assert "elongated" in outcome["wide.png"] and "elongated" in outcome["tall.png"]
    assert "megapixel" in outcome["big_gray.png"]


def test_hostile_images_are_skipped_and_counted(hostile_images, tmp_path):
    spec = PreprocessSpec(input_size=32, resize_size=37)
    loaded = load_images(discover(str(hostile_images)), spec, workers=0, use_cache=False, progress=False)
    assert len(loaded) == 1 and len(loaded.skipped) == 3


def test_images_within_the_budget_decode_exactly_as_before(tmp_path):
    """draft/reduce only serve images above the budget: a 12-megapixel photo is untouched, to the bit."""
    from deploy.images import sample_images
    with Image.open(sample_images()[0]) as image:
        big = image.convert("RGB").resize((3200, 2400), Image.BILINEAR)  # reducible by 3, but within budget
    for name in ("big.jpg", "big.png"):
        big.save(str(tmp_path / name), compress_level=0) if name.endswith(".png") else big.save(str(tmp_path / name))
        plain = np.asarray(Image.open(str(tmp_path / name)).convert("RGB"))
        assert np.array_equal(np.asarray(decode_image(str(tmp_path / name), 256)), plain)


def test_gif_and_other_files_are_counted_and_a_symlink_loop_skipped(tmp_path, images):
    Image.new("RGB", (40, 40)).save(os.path.join(images, "animation.gif"))
    open(os.path.join(images, "README"), "w").close()
    os.symlink("loop.png", os.path.join(images, "loop.png"))  # points at itself
    found = discover(images)
    assert any("left out 2 file(s)" in note and ".gif" in note for note in found.notes), found.notes
    # a link is followed only to a regular file: the loop is left out as the folder is listed, never opened
    assert any("skipped 1 file(s) that are not regular files" in note and "loop.png, a broken link" in note
               for note in found.notes), found.notes
    loaded = load_images(found, PreprocessSpec(input_size=32, resize_size=37), workers=0, use_cache=False,
                         progress=False)
    assert len(loaded) == 4 and loaded.skipped == []


def _labels(images, lines):
    path = os.path.join(os.path.dirname(images), "labels.txt")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def test_a_20_digit_class_index_names_its_line(model_copy, images):
    names = sorted(os.listdir(images))
    labels = _labels(images, ["# file class", "{} 1".format(names[0]), "{} 12345678901234567890".format(names[1])])
    result = run_cli(["calibrate", model_copy, "--data", images, "--labels", labels])
    assert_user_error(result, "labels.txt line 3", "class index")


def test_labels_out_of_range_for_the_model_name_the_first_bad_line(model_copy, images):
    names = sorted(os.listdir(images))
    labels = _labels(images, ["{} {}".format(names[0], 3), "{} 5000".format(names[1]), "{} 1000".format(names[2])])
    result = run_cli(["benchmark-engine", model_copy, "--reference", "eca_resnet18", "--input-size", "32", "--data",
                      images, "--labels", labels, "--iterations", "1"])
    assert_user_error(result, "labels.txt line 2", "5000", "1000 classes")


@pytest.mark.parametrize("value,words", [("nan", "finite"), ("-1", "at least 0"), ("inf", "finite")])
def test_max_top1_drop_must_be_a_sensible_number(model_copy, value, words):
    result = run_cli(["benchmark-engine", model_copy, "--reference", "eca_resnet18", "--max-top1-drop", value])
    assert_user_error(result, "--max-top1-drop", words)


def test_a_batch_larger_than_memory_is_refused_before_running(model_copy, monkeypatch):
    import deploy.validate
    monkeypatch.setattr(deploy.validate, "available_memory_bytes", lambda: 1 << 30)
    result = run_cli(["benchmark-engine", model_copy, "--reference", "eca_resnet18", "--input-size", "32",
                      "--batch-sizes", "1,{}".format(deploy.validate.MAX_BATCH)])  # within the bound, not memory
    assert_user_error(result, "batch of {}".format(deploy.validate.MAX_BATCH), "GiB")
