"""An input is every file a command reads (issue 29): a model's external data, dense or sparse, and its sidecar
are inputs as much as the model, so no output may overwrite them; an output path that holds a FIFO is refused
rather than silently replaced; and ``bundle -o`` never deletes what it did not check."""
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from deploy.errors import UserError
from deploy.validate import check_outputs_spare_inputs, external_data_files, model_data_paths
from tests.faults.conftest import assert_user_error, listing, run_cli


@pytest.fixture()
def external_model(model_copy):
    """The suite's tiny model with every weight in weights.bin beside it."""
    model = onnx.load(model_copy)
    onnx.save(model, model_copy, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    assert os.path.getsize(os.path.join(os.path.dirname(model_copy), "weights.bin")) > 10000
    return model_copy


def sparse_model(folder: str, location: str = "sparse.bin") -> str:
    """A graph whose only weight is a sparse initializer with its values and indices in ``location``: onnx's own
    external-data helper does not list those."""
    values = np.arange(1, 4, dtype=np.float32)
    indices = np.array([0, 4, 8], dtype=np.int64)
    with open(os.path.join(folder, location), "wb") as handle:
        handle.write(values.tobytes() + indices.tobytes())
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(values, "w"), numpy_helper.from_array(indices, "w_i"),
                                       [3, 3])
    for tensor, offset, length in ((sparse.values, 0, 12), (sparse.indices, 12, 24)):
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 3])],
                              sparse_initializer=[sparse])
    path = os.path.join(folder, "sparse.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# -- what a model reads ---------------------------------------------------------------------------------------

def test_external_data_of_sparse_initializers_is_listed(tmp_path):
    path = sparse_model(str(tmp_path))
    assert model_data_paths(path) == [str(tmp_path / "sparse.bin")]
    assert external_data_files(onnx.load(path, load_external_data=False), path) == ["sparse.bin"]


def test_sparse_data_outside_the_folder_is_still_an_input(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    path = sparse_model(str(folder), "../sparse.bin")
    assert model_data_paths(path) == [str(tmp_path / "sparse.bin")]
    with pytest.raises(UserError, match="would overwrite the input MODEL .*sparse.onnx's external data"):
        check_outputs_spare_inputs([("-o", str(tmp_path / "sparse.bin"))], [("MODEL", path)])


def test_a_model_without_external_data_is_not_parsed_for_it(model_copy):
    assert model_data_paths(model_copy) == []
    assert model_data_paths(model_copy + ".missing") == [] and model_data_paths(os.devnull) == []


# -- commands refuse to overwrite it -----------------------------------------------------------------------------

def test_calibrate_refuses_to_write_over_the_models_external_data(external_model, images):
    folder = os.path.dirname(external_model)
    before = listing(folder)
    result = run_cli(["calibrate", external_model, "--data", images, "-o", os.path.join(folder, "weights.bin"),
                      "--workers", "0"])
    assert_user_error(result, "would overwrite the input MODEL", "tiny.onnx's external data", "weights.bin")
    assert listing(folder) == before


def test_compare_layers_refuses_a_plot_over_the_external_data(external_model, images):
    folder = os.path.dirname(external_model)
    other = os.path.join(folder, "other.onnx")
    shutil.copy(external_model, other)  # it shares weights.bin: both models read it
    before = listing(folder)
    result = run_cli(["compare-layers", external_model, other, "--data", images, "--plot",
                      os.path.join(folder, "weights.bin")])
    assert_user_error(result, "--plot", "external data", "weights.bin")
    assert listing(folder) == before


@pytest.mark.parametrize("victim", ["weights.bin", "tiny.onnx.json"])
def test_deploy_bench_refuses_markdown_over_what_the_model_reads(external_model, victim, capsys):
    from deploy.bench import main as bench_main
    folder = os.path.dirname(external_model)
    with open(external_model + ".json", "w") as handle:
        handle.write("{}")  # a sidecar, read with the model where onnx is absent
    before = listing(folder)
    assert bench_main([external_model, "--markdown", os.path.join(folder, victim)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "would overwrite the input MODELS_OR_ENGINES" in err and victim in err
    assert listing(folder) == before


# -- special files at an output path ---------------------------------------------------------------------------

@pytest.fixture()
def fifo(tmp_path):
    path = str(tmp_path / "out.onnx")
    os.mkfifo(path)
    return path


def test_export_refuses_a_fifo_as_its_output(fifo):
    assert_user_error(run_cli(["export", "eca_resnet18", "-o", fifo]), "is a FIFO, not a regular file")
    assert os.path.exists(fifo) and not os.path.isfile(fifo)


def test_deploy_bench_refuses_a_fifo_as_its_markdown(model_copy, tmp_path, capsys):
    from deploy.bench import main as bench_main
    target = str(tmp_path / "bench.md")
    os.mkfifo(target)
    assert bench_main([model_copy, "--markdown", target]) == 2
    assert "is a FIFO, not a regular file" in capsys.readouterr().err and not os.path.isfile(target)


# -- bundle -o replaces only what it checked ---------------------------------------------------------------------

def _slow_fill(monkeypatch, appear):
    """bundle's fill step, with ``appear`` run in its middle: what a second user does while a bundle is written."""
    import bundling.bundle as bundle_module
    fill = bundle_module._fill

    def slow(*args, **kwargs):
        commands = fill(*args, **kwargs)
        appear()
        return commands
    monkeypatch.setattr(bundle_module, "_fill", slow)


@pytest.mark.parametrize("what", ["folder", "file", "empty folder"])
def test_bundle_never_deletes_what_appeared_at_its_output_after_the_checks(model_copy, tmp_path, monkeypatch, what):
    output = tmp_path / "out" / "b"

    def appear():
        output.parent.mkdir(exist_ok=True)
        if what == "file":
            output.write_text("a user's file")
        else:
            output.mkdir()
            if what == "folder":
                (output / "thesis.tex").write_text("a user's work")
    _slow_fill(monkeypatch, appear)
    result = run_cli(["bundle", model_copy, "-o", output, "--no-reference", "--force"])
    assert_user_error(result, str(output), "appeared while the bundle was being written")
    before = listing(output) if output.is_dir() else output.read_text()
    assert before == ({"thesis.tex": b"a user's work"} if what == "folder" else {} if what == "empty folder"
                      else "a user's file")
    assert sorted(os.listdir(str(output.parent))) == ["b"]  # no staging or aside folder left behind


def test_bundle_force_refuses_a_previous_bundle_swapped_for_a_users_folder(model_copy, tmp_path, monkeypatch):
    output = tmp_path / "b"
    assert run_cli(["bundle", model_copy, "-o", output, "--no-reference"]).exit_code == 0

    def swap():
        shutil.rmtree(str(output))
        output.mkdir()
        (output / "eca-deploy-bundle.json").write_text('{"producer": "eca-deploy", "models": []}')
        (output / "notes.txt").write_text("a user's notes")
    _slow_fill(monkeypatch, swap)
    result = run_cli(["bundle", model_copy, "-o", output, "--no-reference", "--force"])
    assert_user_error(result, "was replaced by something else")
    assert (output / "notes.txt").read_text() == "a user's notes"


def test_bundle_force_still_replaces_the_bundle_it_checked(model_copy, tmp_path):
    output = tmp_path / "b"
    for _ in range(2):
        assert run_cli(["bundle", model_copy, "-o", output, "--no-reference", "--force"]).exit_code == 0
    assert (output / "eca-deploy-bundle.json").is_file() and sorted(os.listdir(str(tmp_path))) == ["b", "models"]


def test_a_tarball_that_appeared_after_the_checks_is_kept(model_copy, tmp_path, monkeypatch):
    output = tmp_path / "b.tar.gz"
    _slow_fill(monkeypatch, lambda: output.write_text("someone else's tarball"))
    assert_user_error(run_cli(["bundle", model_copy, "-o", output, "--no-reference"]), "appeared")
    assert output.read_text() == "someone else's tarball"
    assert sorted(os.listdir(str(tmp_path))) == ["b.tar.gz", "models"]


@pytest.mark.parametrize("member", ["reference.npz", "labels.txt", "eca-deploy-bundle.json", "tiny.onnx.json"])
def test_deploy_build_in_a_bundle_refuses_an_engine_over_the_bundles_files(model_copy, tmp_path, capsys, member):
    from deploy.build import main as build_main
    bundle = tmp_path / "b"
    assert run_cli(["bundle", model_copy, "-o", bundle, "--no-reference"]).exit_code == 0
    for name in ("reference.npz", "labels.txt"):
        (bundle / name).write_bytes(b"stands in for the proof and the labels")
    before = listing(bundle)
    assert build_main([str(bundle / "tiny.onnx"), "-o", str(bundle / member), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "would overwrite the input MODEL" in err and member in err
    assert listing(bundle) == before
