"""The build through Polygraphy's loaders, driven over a fake ``tensorrt`` module (tests/fake_tensorrt.py).

What is checked is our glue: the TensorRT calls Polygraphy makes for the arguments we give it, per precision and
TensorRT version, and what we write and refuse afterwards. Real TensorRT builds are in test_tensorrt_engine.py.
"""
import json
import os

import pytest

from deploy.errors import CheckFailedError, UserError
from deploy.metadata import sidecar_path
from deploy.trt import build as build_module
from deploy.build import run_build
from deploy.trt.build import build_engine
from deploy.trt.plan import BuildOptions
from tests.deploy.trt_models import write_model
from tests.fake_tensorrt import DESKTOP11, JETPACK5, JETPACK6, install


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {p: write_model(folder / "m_{}.onnx".format(p), p) for p in ("fp32", "fp16", "int8")}


@pytest.fixture(autouse=True)
def no_gpu_name(monkeypatch):
    monkeypatch.setattr(build_module, "_device", lambda notes: None)  # the sidecar's GPU name needs libcudart


def built(models, model, version, monkeypatch, tmp_path, **options):
    """(result, what the fake TensorRT was asked to build, sidecar)."""
    trt = install(monkeypatch, version)
    result = build_engine(models[model], str(tmp_path / "e.{}.engine".format(options.pop("name", model))),
                          BuildOptions(**options))
    with open(result.engine_path) as engine, open(sidecar_path(result.engine_path)) as sidecar:
        return result, json.load(engine), json.load(sidecar), trt


@pytest.mark.parametrize("model,version,options,flags,strongly_typed", [
    ("fp32", JETPACK5, {}, [], False),
    ("fp32", JETPACK6, {}, [], True),
    ("fp32", DESKTOP11, {}, [], True),
    ("fp32", JETPACK6, {"precision": "fp16", "name": "fp16"}, ["FP16"], False),
    ("fp16", JETPACK5, {}, ["FP16"], False),
    ("fp16", JETPACK6, {}, [], True),
    ("fp16", DESKTOP11, {}, [], True),
    ("int8", JETPACK5, {}, ["INT8"], False),
    ("int8", JETPACK6, {}, [], True),
    ("int8", DESKTOP11, {}, [], True),
])
def test_flags_polygraphy_sets_per_precision_and_version(models, monkeypatch, tmp_path, model, version, options,
                                                         flags, strongly_typed):
    precision = options.get("precision", model)
    result, engine, sidecar, _ = built(models, model, version, monkeypatch, tmp_path, **options)
    assert engine["flags"] == flags  # TF32 cleared, no other reduced precision
    assert engine["strongly_typed"] is strongly_typed is result.strongly_typed
    assert engine["profiles"] == [{"input": [[1, 3, 8, 8], [1, 3, 8, 8], [8, 3, 8, 8]]}]
    assert result.precision == sidecar["precision"] == precision and result.engine_path.endswith(precision + ".engine")
    assert sidecar["trt_flags"] == result.trt_flags and sidecar["tensorrt_version"] == version
    assert result.layer_precisions[precision] == 1 and sidecar["source_onnx"]["sha256"]


def test_options_reach_the_builder_config(models, monkeypatch, tmp_path):
    timing = tmp_path / "timing.cache"
    result, engine, sidecar, _ = built(models, "fp16", JETPACK6, monkeypatch, tmp_path, workspace_mib=64,
                                       dla_core=1, gpu_fallback=True, max_batch=2, timing_cache=str(timing))
    assert engine["pools"] == {"WORKSPACE": 64 << 20} and engine["dla_core"] == 1
    assert engine["flags"] == ["GPU_FALLBACK", "PREFER_PRECISION_CONSTRAINTS"]  # what Polygraphy adds for DLA
    assert engine["profiles"] == [{"input": [[1, 3, 8, 8], [1, 3, 8, 8], [2, 3, 8, 8]]}]
    assert timing.read_bytes() == b"timing" and sidecar["device"]["dla_core"] == 1


def test_implicit_int8_replays_a_checked_cache(models, monkeypatch, tmp_path):
    cache = tmp_path / "m.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    result, engine, sidecar, _ = built(models, "fp32", JETPACK5, monkeypatch, tmp_path, name="int8-implicit",
                                       implicit_int8=True, calib_cache=str(cache))
    assert engine["calibrator"] and engine["flags"] == ["INT8"] and result.precision == "int8-implicit"
    assert sidecar["calibration"]["version"] == "8.5.2" and cache.read_text().startswith("TRT-8502-")
    with pytest.raises(UserError, match=r"written for TensorRT 8\.5\.2 .* but the build is for TensorRT 10\.3\.0"):
        built(models, "fp32", JETPACK6, monkeypatch, tmp_path, name="int8-implicit", implicit_int8=True,
              calib_cache=str(cache))


def test_a_rejected_cache_or_lost_int8_fails_the_build(models, monkeypatch, tmp_path):
    cache = tmp_path / "m.cache"
    cache.write_text("TRT-8502-EntropyCalibration2\ninput: 3c010204\n")
    trt = install(monkeypatch, JETPACK5)
    trt.rejects_cache = True
    with pytest.raises(CheckFailedError, match="did not accept the calibration cache"):
        build_engine(models["fp32"], str(tmp_path / "a.int8-implicit.engine"),
                     BuildOptions(implicit_int8=True, calib_cache=str(cache)))
    trt.rejects_cache, trt.ignores_qdq = False, True
    with pytest.raises(CheckFailedError, match="has no INT8 layers"):
        build_engine(models["int8"], str(tmp_path / "b.int8.engine"))
    assert not os.path.exists(str(tmp_path / "b.int8.engine"))


def test_run_build_json_and_dry_run_agree(models, monkeypatch, tmp_path):
    install(monkeypatch, JETPACK6)
    planned, _ = run_build(models["int8"], None, {"dry_run": True})
    payload, lines = run_build(models["int8"], None, {})
    (engine,) = planned["engines"]
    assert engine["trt_version"] == JETPACK6 and engine["engine"] == payload["engine_path"]
    assert (engine["precision"], engine["trt_flags"], engine["trtexec"]) == (
        payload["precision"], payload["trt_flags"], payload["trtexec"])
    assert any(line.startswith("equivalent polygraphy: polygraphy convert") for line in lines)
    with pytest.raises(UserError, match="--trt-version only applies to --dry-run"):
        run_build(models["int8"], None, {"trt_version": "8.6"})
