"""nvinfer's scaling emulated (bundling.ecosystem.nvinfer_scaling), and the measured geometry in each config."""
import os

import numpy as np
import pytest

from bundling.ecosystem.nvinfer_scaling import LETTERBOX, STRETCH, choose, frame_to_network, nvinfer_input
from deploy.preprocess import PreprocessSpec, preprocess_image
from tests.bundling.ecosystem.bundle_files import read_key_file


def _frame(h, w):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3)).astype(np.uint8)


def test_same_size_is_the_frame_and_a_square_frame_needs_no_padding():
    frame = _frame(32, 32)
    for bilinear in (False, True):
        assert np.array_equal(frame_to_network(frame, 32, 32, STRETCH, bilinear), frame)
        assert np.array_equal(frame_to_network(frame, 16, 16, LETTERBOX, bilinear),
                              frame_to_network(frame, 16, 16, STRETCH, bilinear))


def test_letterbox_keeps_the_aspect_and_pads_black_on_both_sides():
    frame = np.full((20, 40, 3), 200, np.uint8)
    scaled = frame_to_network(frame, 32, 32, LETTERBOX, True)
    assert (scaled[:8] == 0).all() and (scaled[24:] == 0).all() and (scaled[8:24] == 200).all()
    exact = nvinfer_input(frame, 32, 32, LETTERBOX, True, 0.5, (100.0, 100.0, 100.0))
    assert exact.shape == (3, 32, 32) and exact[0, 0, 0] == -50.0 and exact[0, 16, 16] == 50.0


def test_nearest_downscale_by_two_takes_every_second_pixel():
    frame = _frame(8, 8)
    assert np.array_equal(frame_to_network(frame, 4, 4, STRETCH, False), frame[1::2, 1::2])


def test_choose_prefers_the_better_geometry_and_stretch_on_a_tie():
    assert choose({STRETCH: 80.0, LETTERBOX: 85.0}) == (LETTERBOX, 85.0)
    assert choose({STRETCH: 85.0, LETTERBOX: 85.0}) == (STRETCH, 85.0)


def test_stretch_geometry_is_the_whole_image():
    from PIL import Image
    image = Image.fromarray(_frame(20, 40))
    spec = PreprocessSpec(input_size=16, resize_size=18, geometry="stretch")
    assert PreprocessSpec.from_metadata(spec.to_metadata()) == spec
    assert "geometry" not in PreprocessSpec().to_metadata()  # older readers see the models they knew
    expected = np.asarray(image.resize((16, 16), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255.0
    made = preprocess_image(image, spec)
    mean, std = np.array(spec.mean)[:, None, None], np.array(spec.std)[:, None, None]
    np.testing.assert_allclose(made, (expected - mean) / std, atol=1e-5)


def test_digits_configs_carry_the_measured_geometry(digits_bundle):
    """Every config states the agreement of the geometry it applies, measured on the reference images, and
    applies the one that measured best; deploy.check reports the same figures."""
    from deploy.manifest import REFERENCE_FILE
    from deploy.reference import load_reference
    root = digits_bundle[0]
    measured = load_reference(os.path.join(root, REFERENCE_FILE)).nvinfer
    assert measured
    for model, row in measured.items():
        config = os.path.join(root, "deepstream", model[:-len(".onnx")] + ".txt")
        props = dict(read_key_file(config)["property"])
        assert row["applied"] == choose({g: row[g] for g in (STRETCH, LETTERBOX)})[0]
        assert ("maintain-aspect-ratio" in props) == (row["applied"] == LETTERBOX)
        comment = open(config).read().replace("\n# ", " ")
        assert "{} {:.2f}%".format(row["applied"], row[row["applied"]]) in comment
        assert "this config applies {}".format(row["applied"]) in comment
        assert 0.0 <= row[STRETCH] <= 100.0
