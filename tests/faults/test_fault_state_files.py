"""State and proof files read back (pipeline state, engine and model sidecars, the bundle manifest), damaged or
hand-edited: one line naming the file and the field, or for the pipeline's state, a note and a fresh state."""
import json
import os

import pytest

from deploy.errors import UserError
from deploy.infer import main as infer_main
from deploy.metadata import read_model_info, read_sidecar, sidecar_path
from deploy.schema import MapOf, check_schema
from pipeline.run import STATE_FILE, StepRunner
from tests.faults.conftest import assert_user_error, listing, one_error_line, run_cli


def _json(path, value) -> str:
    with open(str(path), "w") as handle:
        handle.write(value if isinstance(value, str) else json.dumps(value))
    return str(path)


GOOD_STEP = {"inputs": {"model": "sha256:ab"}, "options": {}, "options_digest": "d", "outputs": {"m": "m.onnx"}}

DAMAGED_STATES = {
    "steps a list": ({"format": 1, "steps": []}, "field steps must be an object, got a list"),
    "steps a string": ({"format": 1, "steps": "export"}, "field steps must be an object, got a string"),
    "outputs a list": ({"format": 1, "steps": {"export": dict(GOOD_STEP, outputs=["m.onnx"])}},
                       "field steps.export.outputs must be an object"),
    "an input fingerprint a number": ({"format": 1, "steps": {"export": dict(GOOD_STEP, inputs={"model": 3})}},
                                      "field steps.export.inputs.model must be a string or null"),
    "no options digest": ({"format": 1, "steps": {"export": {k: v for k, v in GOOD_STEP.items()
                                                              if k != "options_digest"}}},
                          "field steps.export.options_digest is missing"),
    "not JSON": ('{"format": 1, "steps": {', "cannot read pipeline state"),
    "not UTF-8": ('{"format": 1, "steps": "\udcff"}', "cannot read pipeline state"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED_STATES))
def test_a_damaged_pipeline_state_is_rebuilt_with_a_note(tmp_path, damage):
    content, words = DAMAGED_STATES[damage]
    path = tmp_path / STATE_FILE
    if isinstance(content, str) and "\udcff" in content:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    else:
        _json(path, content)
    lines = []
    steps = StepRunner(str(tmp_path), echo=lines.append, total=1)
    assert steps.state == {"format": 1, "steps": {}}
    assert len(lines) == 1 and lines[0].startswith("note: ") and words in lines[0] and STATE_FILE in lines[0]
    outcome = steps.step("export", {}, {"a": 1}, lambda: ({"model": str(tmp_path / "m.onnx")}, {}))
    assert outcome.status == "ran"
    with open(str(path)) as handle:
        assert set(json.load(handle)["steps"]) == {"export"}  # written again, whole


def test_a_state_of_another_format_is_rebuilt_without_a_word(tmp_path):
    _json(tmp_path / STATE_FILE, {"format": 99, "steps": "whatever a later release writes"})
    lines = []
    assert StepRunner(str(tmp_path), echo=lines.append).state == {"format": 1, "steps": {}} and lines == []


ENGINE_SIDECARS = {
    "a list": ([], "must be an object, got a list"),
    "source_onnx a string": ({"source_onnx": "m.onnx"}, "field source_onnx must be an object"),
    "device name a number": ({"device": {"name": 3}}, "field device.name must be a string, got an integer"),
    "trt_flags with a number": ({"trt_flags": ["FP16", 1]}, "field trt_flags[1] must be a string"),
    "engine_size true": ({"engine_size": True}, "field engine_size must be an integer, got true or false"),
    "metadata a list": ({"metadata": ["arch"]}, "field metadata must be an object"),
}


@pytest.mark.parametrize("damage", sorted(ENGINE_SIDECARS))
def test_a_damaged_engine_sidecar_names_its_field(model_copy, images, capsys, damage):
    content, words = ENGINE_SIDECARS[damage]
    engine = os.path.join(os.path.dirname(model_copy), "tiny.fp32.engine")
    _json(engine, "not an engine")
    _json(sidecar_path(engine), content)
    with pytest.raises(UserError, match="tiny.fp32.engine.json") as raised:
        read_sidecar(engine)
    assert words in str(raised.value)
    assert infer_main([engine, images]) == 2
    captured = capsys.readouterr()
    assert words in one_error_line(captured.err, captured.out)


def test_a_damaged_model_sidecar_names_its_field(model_copy, monkeypatch):
    """Where the onnx package is missing (a Jetson), the bundled model's sidecar carries its metadata."""
    from deploy import metadata
    _json(sidecar_path(model_copy), {"metadata": {"arch": "x"}, "inputs": {"input": ["N", 3, 32, 32]}})
    with pytest.raises(UserError, match=r"tiny.onnx.json: field inputs.input\[0\] must be an integer or null"):
        read_sidecar(model_copy)
    monkeypatch.setattr(metadata, "load_onnx_proto", lambda path: (None, None))
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # neither onnx nor ONNX Runtime
    with pytest.raises(UserError, match="field inputs.input"):
        read_model_info(model_copy)


@pytest.mark.parametrize("manifest,words", [
    ({"producer": "eca-deploy", "models": "tiny.onnx"}, "field models must be a list, got a string"),
    ({"models": []}, "field producer is missing"),
    ("{", "cannot read bundle manifest"),
])
def test_a_damaged_bundle_manifest_is_not_replaced_by_force(model_copy, tmp_path, manifest, words):
    previous = tmp_path / "bundle"
    previous.mkdir()
    _json(previous / "eca-deploy-bundle.json", manifest)
    before = listing(previous)
    result = run_cli(["bundle", model_copy, "-o", previous, "--force", "--no-reference"])
    assert_user_error(result, "eca-deploy-bundle.json", words)
    assert listing(previous) == before


def test_the_schema_checker_itself():
    schema = {"a": int, "b?": [MapOf((str, type(None)))], "c?": float}
    check_schema({"a": 1, "b": [{"x": None, "y": "z"}], "c": 2, "extra": object()}, schema, "f.json")
    for value, words in [({}, "f.json: field a is missing"), ({"a": 1.5}, "field a must be an integer, got a number"),
                         ({"a": 1, "b": [{"x": 1}]}, "field b[0].x must be a string or null"),
                         ({"a": 1, "c": "2"}, "field c must be a number, got a string"),
                         ([], "f.json must be an object, got a list")]:
        with pytest.raises(UserError) as raised:
            check_schema(value, schema, "f.json")
        assert words in str(raised.value) and "\n" not in str(raised.value)
