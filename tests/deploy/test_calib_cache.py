"""The TensorRT calibration cache: version integers, the exact text format, and round trips."""
import struct

import numpy as np
import pytest

from deploy.calib_cache import (
    CalibrationCache,
    decode_scale,
    encode_scale,
    format_calibration_cache,
    format_trt_version,
    parse_calibration_cache,
    parse_trt_version,
    read_calibration_cache,
    write_calibration_cache,
)
from deploy.errors import UserError


@pytest.mark.parametrize("text, number", [
    ("8.6", 8600), ("8.6.1", 8601), ("8.5.2", 8502), ("8.5.2.2", 8502), ("7.1.3", 7103),
    ("10.3", 100300), ("10.3.0", 100300), ("10.13.2", 101302), ("8601", 8601), (8502, 8502),
])
def test_trt_version_integers(text, number):
    # TensorRT 8: major*1000 + minor*100 + patch; TensorRT 10: major*10000 + minor*100 + patch.
    assert parse_trt_version(text) == number


@pytest.mark.parametrize("bad", ["", "8", "8.x", "v8.6", "8.6.1.2.3", "8.100", "8.6.100"])
def test_bad_trt_versions_are_user_errors(bad):
    with pytest.raises(UserError):
        parse_trt_version(bad)


def test_format_trt_version_inverts_parse():
    for text in ("8.5.2", "8.6.1", "10.3.0", "10.13.2"):
        assert format_trt_version(parse_trt_version(text)) == text


def test_scale_hex_is_big_endian_float32():
    # What ONNX Runtime's ReadDynamicRange and ModelOpt do: struct.unpack('!f', bytes.fromhex(h)).
    assert encode_scale(1.0) == "3f800000"
    assert encode_scale(1.0 / 127) == struct.pack("!f", 1.0 / 127).hex()
    assert decode_scale("3c010204") == struct.unpack("!f", bytes.fromhex("3c010204"))[0]
    assert decode_scale("3c010204") * 127 == pytest.approx(1.0, rel=1e-3)


def test_exact_text_and_round_trip(tmp_path):
    scales = {"input": 2.64 / 127, "/conv1/Conv_output_0": 0.0311, "logits": 0.086}
    text = format_calibration_cache(scales, "8.6.1", "EntropyCalibration2")
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "input: " + struct.pack(">f", 2.64 / 127).hex()
    assert text.endswith("\n") and len(lines) == 4

    path = write_calibration_cache(str(tmp_path / "model.calib.cache"), scales, "10.3", "MinMaxCalibration")
    cache = read_calibration_cache(path)
    assert isinstance(cache, CalibrationCache)
    assert (cache.trt_version, cache.algorithm) == (100300, "MinMaxCalibration")
    assert list(cache.scales) == list(scales)  # order kept
    for name, scale in scales.items():
        assert cache.scales[name] == float(np.float32(scale))
    assert cache.amax("input") == pytest.approx(2.64, rel=1e-6)


def test_parses_caches_written_by_tensorrt():
    # TensorRT's own layout, including its unnamed-layer tensors and TensorFlow-style names holding ':'.
    text = ("TRT-7202-EntropyCalibration2\n"
            "data: 3c008912\n"
            "(Unnamed Layer* 4) [Fully Connected]_output: 3d65992f\n"
            "conv1/convolution:0: 3d0b7086\n")
    cache = parse_calibration_cache(text)
    assert cache.trt_version == 7202 and cache.algorithm == "EntropyCalibration2"
    assert list(cache.scales) == ["data", "(Unnamed Layer* 4) [Fully Connected]_output", "conv1/convolution:0"]
    assert cache.scales["data"] == pytest.approx(0.0078446, rel=1e-4)


@pytest.mark.parametrize("text", ["", "input: 3f800000\n", "TRT-8600-EntropyCalibration2\ninput 3f800000\n",
                                  "TRT-8600-EntropyCalibration2\ninput: 3f80\n"])
def test_malformed_caches_are_user_errors(text):
    with pytest.raises(UserError):
        parse_calibration_cache(text)


@pytest.mark.parametrize("scales, algorithm", [({"x": 0.0}, "EntropyCalibration2"), ({"x": float("nan")}, None),
                                               ({"x": 1.0}, "Percentile"), ({"a\nb": 1.0}, None)])
def test_unwritable_caches_are_refused(scales, algorithm):
    with pytest.raises(UserError):
        format_calibration_cache(scales, "8.6", algorithm or "EntropyCalibration2")


def test_missing_cache_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        read_calibration_cache(str(tmp_path / "absent.cache"))
