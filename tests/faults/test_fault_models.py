"""Bad ONNX files and lying metadata, through calibrate, deploy.infer and bundle: one line, exit 2."""
import json
import os

import onnx
import pytest

from deploy.infer import main as infer_main
from tests.faults.conftest import assert_user_error, listing, one_error_line, run_cli


def _edit(path, change):
    model = onnx.load(path, load_external_data=False)
    change(model)
    with open(path, "wb") as handle:
        handle.write(model.SerializeToString())


def _set_meta(**values):
    def change(model):
        for prop in model.metadata_props:
            if prop.key in values:
                prop.value = values[prop.key]
    return change


def _opset(version):
    def change(model):
        model.opset_import[0].version = version
    return change


def _external_outside(model_path):
    """Weights saved as external data, then pointed at a file outside the model's folder."""
    model = onnx.load(model_path)
    folder = os.path.dirname(model_path)
    onnx.save(model, model_path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    os.replace(os.path.join(folder, "weights.bin"), os.path.join(os.path.dirname(folder), "weights.bin"))

    def change(proto):
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../weights.bin"
    return change


FAULTS = {
    "opset 99": (lambda p: _opset(99), "opset 99"),
    "num_classes=ten": (lambda p: _set_meta(num_classes="ten"), "num_classes"),
    "input size of another model": (lambda p: _set_meta(input_size="64", resize_size="73"), "input_size"),
    "classes of another model": (lambda p: _set_meta(num_classes="10"), "num_classes"),
    "external data outside its folder": (_external_outside, "outside the model's folder"),
    "no metadata": (lambda p: (lambda m: m.metadata_props.__delitem__(slice(None))), "no eca-deploy metadata"),
    "mean not numbers": (lambda p: _set_meta(mean='["a", 1, 2]'), "mean"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_model_in_calibrate(model_copy, images, fault):
    make, fragment = FAULTS[fault]
    _edit(model_copy, make(model_copy))
    before = listing(os.path.dirname(model_copy))
    result = run_cli(["calibrate", model_copy, "--data", images, "--num-images", "2", "--workers", "0"])
    assert_user_error(result, fragment)
    assert listing(os.path.dirname(model_copy)) == before  # nothing written, nothing removed


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_model_in_deploy_infer(model_copy, images, fault, capsys):
    make, fragment = FAULTS[fault]
    _edit(model_copy, make(model_copy))
    code = infer_main([model_copy, images])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert fragment in one_error_line(captured.err, captured.out)


@pytest.mark.parametrize("fault", ["opset 99", "external data outside its folder", "no metadata",
                                   "num_classes=ten"])
def test_bad_model_is_not_bundled(model_copy, tmp_path, fault):
    make, fragment = FAULTS[fault]
    _edit(model_copy, make(model_copy))
    result = run_cli(["bundle", model_copy, "-o", tmp_path / "bundle"])
    assert_user_error(result, fragment)
    assert not (tmp_path / "bundle").exists()


def test_calibrate_refuses_opsets_below_13(model_copy, images):
    _edit(model_copy, _opset(7))
    assert_user_error(run_cli(["calibrate", model_copy, "--data", images]), "opset 7", "13")


def test_unknown_provider_is_an_error_and_an_unavailable_one_a_warning(model_copy, images, capsys):
    assert infer_main([model_copy, images, "--providers", "bogus"]) == 2
    assert "bogus" in one_error_line(capsys.readouterr().err)
    assert infer_main([model_copy, images, "--providers", "tensorrt,cpu", "--top-k", "1"]) == 0
    err = capsys.readouterr().err
    assert "cannot run TensorrtExecutionProvider" in err and "error:" not in err


@pytest.mark.parametrize("content", ["[1, 2, 3]", '{"metadata": [1, 2]}', '"text"'])
def test_engine_sidecar_that_is_not_an_object(tmp_path, images, content, capsys):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    (tmp_path / "model.engine.json").write_text(content)
    assert infer_main([str(engine), images]) == 2
    assert "must" in one_error_line(capsys.readouterr().err)


def test_bundle_carries_external_data_of_any_name(model_copy, tmp_path):
    model = onnx.load(model_copy)
    onnx.save(model, model_copy, save_as_external_data=True, location="weights.bin", size_threshold=0)
    result = run_cli(["bundle", model_copy, "-o", tmp_path / "bundle", "--json", "--no-reference"])
    assert result.exit_code == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    assert "weights.bin" in files
    # the unpacked bundle loads its model with all its weights
    loaded = onnx.load(str(tmp_path / "bundle" / "tiny.onnx"))
    assert sum(t.ByteSize() for t in loaded.graph.initializer) > 100000
