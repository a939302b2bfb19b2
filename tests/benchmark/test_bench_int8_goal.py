"""The INT8-goal benchmark: its harder digits, and one short run end to end (JSON rows per target)."""
import json
import os

import numpy as np

from benchmark import bench_int8_goal
from data.digits import digit_to_image, load_digits_arrays


def test_noisy_digits_are_reproducible_and_harder_than_the_clean_ones():
    pixels = load_digits_arrays()[0][0]
    first = np.asarray(bench_int8_goal.noisy_digit(pixels, np.random.RandomState(3)))
    again = np.asarray(bench_int8_goal.noisy_digit(pixels, np.random.RandomState(3)))
    other = np.asarray(bench_int8_goal.noisy_digit(pixels, np.random.RandomState(4)))
    clean = np.asarray(digit_to_image(pixels, bench_int8_goal.IMAGE_SIZE), dtype=np.float32)
    assert first.shape == (73, 73, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.abs(first.astype(np.float32) - clean).mean() > 10  # noise, shift, scale and rotation


def test_a_short_run_reports_both_targets_against_the_goal(tmp_path, capsys):
    assert bench_int8_goal.main(["--widths", "0.25", "--epochs", "1", "--keep", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["goal"] == {"min_agreement": 99.5, "max_top1_drop": 0.5}
    assert [row["target"] for row in report["rows"]] == ["tensorrt", "cpu"]
    for row in report["rows"]:
        assert row["unseen_images"] == 397 and 0.0 <= row["agreement"] <= 100.0
        assert row["met"] == (row["agreement"] >= 99.5 and -row["top1_change"] <= 0.5)  # both rounded to 2 places
        # The unoptimized run differs from the scored one only where the two runs' top-1 differ.
        assert 0 <= row["kernel_flips"] <= 397 and row["kernel_max_logit_diff"] >= 0.0
        assert abs(row["agreement"] - row["reference_agreement"]) <= 100.0 * row["kernel_flips"] / 397 + 0.01
    digits = tmp_path / "digits"
    assert sum(len(files) for _, _, files in os.walk(digits / "train")) == 1400
    assert sum(len(files) for _, _, files in os.walk(digits / "val")) == 397
    assert (tmp_path / "width_0.25" / "eca_mobilenet_v2.int8.tensorrt.onnx").is_file()


def test_the_goal_is_read_at_two_decimals_as_the_issue_reads_it():
    assert bench_int8_goal._meets_goal(100.0 * 395 / 397, 0.25)       # 99.50%: ModelOpt's best, the bar
    assert not bench_int8_goal._meets_goal(100.0 * 394 / 397, 0.0)    # 99.24%
    assert not bench_int8_goal._meets_goal(100.0, 100.0 * 3 / 397)    # 0.76 pt lost
