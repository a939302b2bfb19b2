"""`--method auto` on the digits models: the held-out split, the choice among the candidates, determinism, and
the rule that the held-out images never feed the ranges."""
import json
import shutil

import numpy as np
import onnx
import pytest

from calibration.api import calibrate
from calibration.fallback import AccuracyGoal
from calibration.ranges import compute_ranges
from calibration.selection import CANDIDATES, MIN_HOLDOUT, Score, best_candidate, holdout_split
from deploy.errors import UserError
from deploy.metadata import read_model_info


def test_holdout_split_sizes_balance_and_determinism():
    labels = np.repeat(np.arange(10), 51)
    split = holdout_split(len(labels), seed=3, labels=labels)
    assert len(split.holdout) == round(0.2 * 510) and split.note is None
    assert not set(split.holdout) & set(split.calibration)
    assert sorted(set(split.holdout) | set(split.calibration)) == list(range(510))
    counts = np.bincount(labels[split.holdout], minlength=10)
    assert counts.max() - counts.min() <= 1                          # every class held out alike
    again = holdout_split(len(labels), seed=3, labels=labels)
    assert np.array_equal(split.holdout, again.holdout)
    assert not np.array_equal(split.holdout, holdout_split(len(labels), seed=4, labels=labels).holdout)

    assert len(holdout_split(200).holdout) == MIN_HOLDOUT              # 20% would be 40: at least 64
    small = holdout_split(40)
    assert len(small.holdout) == 20 and "only 40 calibration images" in small.note
    with pytest.raises(UserError, match="at least 4 images"):
        holdout_split(3)


def test_agreement_within_one_heldout_image_is_a_tie_that_kl_settles():
    scores = [Score(100.0, 0.009), Score(99.0, 0.002), Score(99.0, 0.001), Score(98.0, 0.0001)]
    assert best_candidate(scores, images=100) == 2          # 1 image below the best: tied, least KL wins
    assert best_candidate(scores, images=1000) == 0         # 10 images below: agreement decides
    assert best_candidate([Score(99.0, 0.001), Score(99.0, 0.001)], images=100) == 0  # then the order


@pytest.fixture(scope="module")
def auto_mobilenet(digits_mobilenet_onnx, digits_calibration_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auto")
    model = str(folder / "mbv2.onnx")
    shutil.copy(digits_mobilenet_onnx, model)
    result = calibrate(model, targets=("tensorrt", "cpu"), images=digits_calibration_images, progress=False,
                       fp16=False)
    return model, result


def test_auto_keeps_the_best_candidate_per_target(auto_mobilenet):
    model, result = auto_mobilenet
    assert result.requested_method == "auto" and result.heldout_images == round(0.2 * 512)
    assert result.num_images == 512 - result.heldout_images
    for target in ("tensorrt", "cpu"):
        outcome = result.targets[target]
        table = outcome.candidates
        assert [row["method"] for row in table] == [c.name for c in CANDIDATES]
        scored = [row for row in table if "same_as" not in row]
        best = scored[best_candidate([Score(row["agreement"], row["kl"]) for row in scored], result.heldout_images)]
        assert outcome.candidate.name == best["method"] and outcome.score == {
            k: v for k, v in best.items() if k not in ("method", "same_as")}
        # The written model is the chosen one: it scores as the table says on the same held-out images.
        meta = read_model_info(result.int8_models[target]).extra
        assert meta["calibration_method"] == outcome.candidate.method
        assert meta["calibration_selection"] == "auto" and json.loads(meta["float_layers"]) == []
        assert float(meta["calibration_heldout_agreement"]) == pytest.approx(best["agreement"], abs=0.01)
        # On this model the candidates differ: a method that always won would make "auto" pointless.
        assert len({row["agreement"] for row in table}) > 1 or len({row["kl"] for row in table}) > 1
    report = json.load(open(result.ranges_json))
    assert report["method"] == result.targets["tensorrt"].candidate.method
    assert report["targets"]["cpu"]["choice"] == result.targets["cpu"].candidate.name


def test_auto_is_byte_identical_for_the_same_inputs(auto_mobilenet, digits_calibration_images, tmp_path):
    model, first = auto_mobilenet
    copy = str(tmp_path / "mbv2.onnx")
    shutil.copy(model, copy)
    second = calibrate(copy, targets=("tensorrt", "cpu"), images=digits_calibration_images, progress=False,
                       fp16=False)
    pairs = [(first.int8_models[t], second.int8_models[t]) for t in ("tensorrt", "cpu")]
    pairs += [(first.calib_cache, second.calib_cache)]
    for a, b in pairs:
        assert open(a, "rb").read() == open(b, "rb").read(), (a, b)
    strip = lambda path: {k: v for k, v in json.load(open(path)).items() if k != "model"}  # noqa: E731
    assert strip(first.ranges_json) == strip(second.ranges_json)


def test_heldout_images_never_feed_the_ranges(digits_eca_onnx, digits_calibration_images, tmp_path):
    images = digits_calibration_images
    split = holdout_split(len(images.array), 0, images.labels)
    model = str(tmp_path / "eca.onnx")
    shutil.copy(digits_eca_onnx, model)
    result = calibrate(model, targets=("tensorrt",), images=images, progress=False, fp16=False)
    chosen = result.targets["tensorrt"].candidate
    expected = compute_ranges(onnx.load(model), images.array[split.calibration], chosen.method,
                              chosen.range_percentile, progress=False)
    written = json.load(open(result.ranges_json))["tensors"]
    assert set(written) == set(expected.tensors)
    for name, tensor_range in expected.tensors.items():
        assert written[name]["amax"] == tensor_range.amax and written[name]["max"] == tensor_range.max

    # Scrambling the held-out images changes the scores, never the ranges.
    scrambled = type(images)(array=images.array.copy(), labels=images.labels, paths=images.paths, skipped=[])
    scrambled.array[split.holdout] = np.random.RandomState(0).randn(*scrambled.array[split.holdout].shape)
    other = calibrate(model, targets=("tensorrt",), images=scrambled, progress=False, fp16=False,
                      method=chosen.method, percentile=chosen.range_percentile,
                      goal=AccuracyGoal(min_agreement=0.0))  # a goal holds the same split out, method fixed
    assert json.load(open(other.ranges_json))["tensors"] == written


def test_a_holdout_every_model_agrees_on_is_flagged():
    from calibration.api import TargetOutcome, _all_agree
    perfect = TargetOutcome(CANDIDATES[0], "auto", [{"agreement": 100.0}, {"agreement": 100.0}],
                            score={"agreement": 100.0})
    split = TargetOutcome(CANDIDATES[0], "auto", [{"agreement": 100.0}, {"agreement": 99.0}],
                          score={"agreement": 100.0})
    explicit = TargetOutcome(CANDIDATES[0], "explicit", score={"agreement": 100.0})
    assert _all_agree({"tensorrt": perfect, "cpu": explicit})
    assert not _all_agree({"tensorrt": perfect, "cpu": split})
    assert not _all_agree({"tensorrt": TargetOutcome(CANDIDATES[0], "explicit")})  # nothing scored


def test_reports_say_which_images_judged_the_calibration():
    from calibration.api import describe_calibration
    meta = {"quant_target": "cpu", "calibration_method": "mse", "calibration_selection": "auto",
            "calibration_heldout_agreement": "99.49", "calibration_heldout_images": "197",
            "float_layers": '["/conv1/Conv"]'}
    assert describe_calibration(meta) == ("mse (auto, 99.49% agreement on 197 judging images held out of the "
                                          "calibration images; reads high), 1 float layer(s): /conv1/Conv")
    meta["calibration_heldout_source"] = "separate"
    assert "99.49% agreement on 197 judging images (they chose it" in describe_calibration(meta)


def test_run_logits_unoptimized_runs_the_same_arithmetic_in_another_order(auto_mobilenet,
                                                                          digits_calibration_images):
    from calibration.selection import run_logits
    model, result = auto_mobilenet
    images = np.ascontiguousarray(digits_calibration_images.array[:16], dtype=np.float32)
    fp32 = onnx.load(model)
    assert np.allclose(run_logits(fp32, images), run_logits(fp32, images, optimize=False), atol=1e-4)
    quantized = onnx.load(result.int8_models["cpu"])
    optimized, written = run_logits(quantized, images), run_logits(quantized, images, optimize=False)
    assert optimized.shape == written.shape == (16, 10)
    assert np.mean(optimized.argmax(1) == written.argmax(1)) >= 0.9   # the same model, rounded near-alike
