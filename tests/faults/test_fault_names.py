"""Names are data (issue 29): a tensor, file or class-folder name never runs as code, rewrites a config or shifts a
label. Either the bundle refuses it in one line, or every consumer's own parser gives back exactly that name:
``sh`` running build_engines.sh (with stub python3 and trtexec), GLib reading the nvinfer config (libglib through
ctypes), Triton's schema reading config.pbtxt, and the device's labels reader.
"""
import os
import shlex
import subprocess
from types import SimpleNamespace

import onnx
import pytest

from deploy.errors import UserError
from deploy.runners.execution import DEFAULT_MAX_BATCH
from deploy.names import (check_label_names, numbered_name, read_label_names, terminal_text, unsafe_character,
                          write_label_file)
from tests.bundling.ecosystem.bundle_files import glib_key_file, keys_once
from tests.faults.conftest import assert_user_error, listing, run_cli

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] (requirements-dev.txt) carries Triton's schema")
from google.protobuf import text_format  # noqa: E402  (protobuf comes with tritonclient)


def renamed(source: str, target: str, input_name=None, output_name=None) -> str:
    """``source`` saved as ``target`` with its image input and logits output renamed, as a user's own tool would."""
    model = onnx.load(source)
    for value, new in ((model.graph.input[0], input_name), (model.graph.output[0], output_name)):
        if new is None:
            continue
        old, value.name = value.name, new
        for node in model.graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]
    onnx.save(model, target)
    return target


# -- refused in one line ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("input_name,output_name,shown", [
    ("input\ntouch pwned #", None, "'input\\ntouch pwned #'"),
    (None, "logits\nmodel-engine-file=/tmp/evil.engine", "\\nmodel-engine-file"),
    (None, "logits\rnetwork-mode=1", "\\r"),
    ("in\x1b[2Jput", None, "\\x1b"),
    (None, "logits\u2028x", "\\u2028"),
])
def test_a_tensor_name_with_a_control_character_is_refused(model_copy, tmp_path, input_name, output_name, shown):
    model = renamed(model_copy, os.path.join(os.path.dirname(model_copy), "evil.onnx"), input_name, output_name)
    line = assert_user_error(run_cli(["bundle", model, "-o", tmp_path / "b", "--no-reference"]),
                             "evil.onnx", "tensor", shown)
    assert "holds the control character" in line
    assert not os.path.exists(str(tmp_path / "b")) and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["m\ntouch pwned #.onnx", "m\rx.onnx", "m\x85.onnx"])
def test_a_file_name_with_a_control_character_is_refused(model_copy, tmp_path, name):
    model = os.path.join(os.path.dirname(model_copy), name)
    os.rename(model_copy, model)
    assert_user_error(run_cli(["bundle", model, "-o", tmp_path / "b", "--no-reference"]), "file name",
                      terminal_text(repr(name)).strip("'"))
    assert not os.path.exists(str(tmp_path / "b"))


@pytest.mark.parametrize("folder,words", [
    ("2\rb", "\\r"), ("\xa0", "empty or only white space"), ("3\nx", "\\n"), (" cat", "white space"),
    ("dog\t", "\\t"),
])
def test_a_class_folder_that_is_not_one_labels_line_is_refused_before_pytorch(model_copy, images, tmp_path, folder,
                                                                                words):
    data = tmp_path / "data"
    for name in ["0", "1", folder]:
        (data / name).mkdir(parents=True)
        for image in sorted(os.listdir(images))[:1]:
            os.link(os.path.join(images, image), str(data / name / image))
    before = listing(data)
    line = assert_user_error(run_cli(["bundle", model_copy, "-o", tmp_path / "b", "--data", data]),
                             "class folders of --data", words)
    assert "rename it" in line and listing(data) == before and not os.path.exists(str(tmp_path / "b"))


def test_the_bundle_itself_refuses_class_names_a_labels_file_cannot_hold(model_copy, tmp_path):
    """The library's own gate, for callers that bring their proof (the pipeline): before anything is written."""
    from bundling.bundle import bundle
    proof = SimpleNamespace(class_names=[str(i) for i in range(8)] + ["2\rb", "\xa0"])
    with pytest.raises(UserError, match="class 8 is named '2\\\\rb'"):
        bundle([model_copy], str(tmp_path / "b"), proof=proof)
    assert os.listdir(str(tmp_path)) == ["models"]


# -- written so that each consumer reads back exactly the name --------------------------------------------------

ODD_INPUT = " in;put $(touch pwned) `touch pwned` \"q\" \\"
ODD_OUTPUT = " logits;model-engine-file=/tmp/evil.engine \\ \"z\" #"
ODD_FILE = "my $(touch pwned) 'x.onnx"


@pytest.fixture()
def odd_bundle(model_copy, tmp_path):
    """A bundle of a model whose file and tensor names hold every shell, key-file and pbtxt metacharacter, but no
    control character: legal names, which must travel unchanged."""
    model = renamed(model_copy, os.path.join(os.path.dirname(model_copy), ODD_FILE), ODD_INPUT, ODD_OUTPUT)
    output = str(tmp_path / "bundle")
    result = run_cli(["bundle", model, "-o", output, "--no-reference"])
    assert result.exit_code == 0, result.output
    return output


def test_build_engines_sh_runs_exactly_the_commands_it_shows(odd_bundle, tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls"
    # python3 and trtexec record their words and write the engine deploy.build would write
    stub = ("#!/bin/sh\nprintf '%s\\0' \"$0\" \"$@\" >> {}\nprintf '\\n' >> {}\n"
            "while [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then : > \"$2\"; fi; shift; done\n").format(
                shlex.quote(str(log)), shlex.quote(str(log)))
    for name in ("python3", "trtexec", "touch"):
        (stubs / name).write_text(stub)
        (stubs / name).chmod(0o755)
    env = dict(os.environ, PATH="{}:{}".format(stubs, os.environ["PATH"]))
    proc = subprocess.run(["sh", "build_engines.sh"], cwd=odd_bundle, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = [call.split("\0") for call in log.read_text().split("\0\n") if call]
    # no touch, no trtexec: nothing else ran than the engine build and jetson-inference's batch-1 rewrite
    assert [os.path.basename(call[0]) for call in calls] == ["python3", "python3"]
    engine = ODD_FILE[:-len(".onnx")] + ".fp32.engine"
    builds = [call[1:] for call in calls if call[1:3] == ["-m", "deploy.build"]]
    assert builds == [["-m", "deploy.build", ODD_FILE, "-o", engine, "--max-batch", str(DEFAULT_MAX_BATCH)]]
    derived = [call[1:] for call in calls if call[1:3] == ["-m", "deploy.fixed_batch"]]
    assert derived == [["-m", "deploy.fixed_batch", ODD_FILE, "jetson-inference/" + ODD_FILE[:-len(".onnx")]
                        + ".batch1.onnx"]]
    assert not any("pwned" == name for _, _, files in os.walk(str(tmp_path)) for name in files)
    assert os.path.exists(os.path.join(odd_bundle, "triton", "my___touch_pwned___x_trt", "1", "model.plan"))


def test_the_nvinfer_config_reads_back_the_names_with_glib(odd_bundle):
    folder = os.path.join(odd_bundle, "deepstream")
    config = os.path.join(folder, ODD_FILE[:-len(".onnx")] + ".txt")
    assert keys_once(config).count("model-engine-file") == 1
    values = glib_key_file(config, list_keys=("output-blob-names",))
    if values is None:
        pytest.skip("libglib-2.0 is not installed; the key check above is line-based only")
    assert values["output-blob-names"] == [ODD_OUTPUT]
    assert values["onnx-file"] == "../" + ODD_FILE
    assert values["model-engine-file"] == "../" + ODD_FILE[:-len(".onnx")] + ".fp32.engine"
    assert values["network-mode"] == "0"
    labels = os.path.join(folder, values["labelfile-path"])
    assert open(labels, encoding="utf-8").read().count("\n") == 1 and len(open(labels).read().split(";")) == 1000


def test_the_triton_configs_parse_with_tritons_schema_and_keep_the_names(odd_bundle):
    root = os.path.join(odd_bundle, "triton")
    for name in sorted(os.listdir(root)):
        config = model_config_pb2.ModelConfig()
        with open(os.path.join(root, name, "config.pbtxt"), encoding="utf-8") as handle:
            text_format.Parse(handle.read(), config)
        assert config.name == name
        assert [t.name for t in config.input] == [ODD_INPUT] and [t.name for t in config.output] == [ODD_OUTPUT]
        assert len(read_label_names(os.path.join(root, name, "labels.txt"))) == 1000


def test_the_readme_lines_are_shell_words(odd_bundle):
    with open(os.path.join(odd_bundle, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    imagenet = next(line for line in readme.splitlines() if line.strip().startswith("imagenet "))
    words = shlex.split(imagenet)
    assert "--input_blob=" + ODD_INPUT in words and "--output_blob=" + ODD_OUTPUT in words
    infer = [shlex.split(line) for line in readme.splitlines() if line.strip().startswith("python3 -m deploy.infer")]
    assert infer and all(words[3] in (ODD_FILE, ODD_FILE[:-len(".onnx")] + ".fp32.engine") for words in infer)


def test_a_model_named_with_a_space_gets_a_quoted_imagenet_line(model_copy, tmp_path):
    model = os.path.join(os.path.dirname(model_copy), "my model.onnx")
    os.rename(model_copy, model)
    assert run_cli(["bundle", model, "-o", tmp_path / "b", "--no-reference"]).exit_code == 0
    with open(str(tmp_path / "b" / "README.md"), encoding="utf-8") as handle:
        line = next(line for line in handle.read().splitlines() if line.strip().startswith("imagenet "))
    assert "--model=jetson-inference/my model.batch1.onnx" in shlex.split(line)


# -- the writers themselves --------------------------------------------------------------------------------------

@pytest.mark.parametrize("names,words", [
    (["a", "2\rb", "c"], "class 1 is named '2\\rb'"),
    (["a", "\xa0"], "empty or only white space"),
    (["a", "b "], "starts or ends with white space"),
    (["", "b"], "class 0"),
    (["x\u2029y"], "\\u2029"),
])
def test_label_names_that_would_not_read_back_are_refused(tmp_path, names, words):
    with pytest.raises(UserError) as raised:
        write_label_file(str(tmp_path / "labels.txt"), names, "test")
    assert words in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "labels.txt").exists()


@pytest.mark.parametrize("names", [["tench", "gold fish", "a;b", "ünïcödé", "x\\y", "'q'"], [str(i) for i in range(10)]])
def test_label_files_read_back_as_written(tmp_path, names):
    from bundling.ecosystem.deepstream import write_labels
    path = str(tmp_path / "labels.txt")
    write_label_file(path, names, "test")
    assert read_label_names(path) == check_label_names(names, "test")
    write_labels(str(tmp_path / "ds.txt"), names, "test")
    assert open(str(tmp_path / "ds.txt"), encoding="utf-8").read().rstrip("\n").split(";") == [
        name.replace(";", ",") for name in names]


def test_terminal_text_keeps_one_line():
    for text in ["a\nb", "a\rb", "\x1b[2Jx", "a\u2028b", "\u202eevil", "a\x85b"]:
        shown = terminal_text(text)
        assert len(shown.splitlines()) == 1 and unsafe_character(shown) is None and "\u202e" not in shown
    assert terminal_text("plain ünïcödé name.png") == "plain ünïcödé name.png"


def test_an_error_naming_a_control_character_is_one_line(capsys):
    from deploy.cliutil import report_error
    assert report_error(UserError("no such file: a\nerror: fake\x1b[2J")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no such file: a\\x0aerror: fake\\x1b[2J")


@pytest.mark.parametrize("name", ["a" * 251 + ".png", "é" * 125 + ".jpeg", "b" * 255, "x.png"])
def test_numbered_copies_fit_a_file_name(tmp_path, name):
    copies = {numbered_name(index, name) for index in (0, 7, 99)}
    assert len(copies) == 3
    for copy in copies:
        assert len(copy.encode("utf-8")) <= 255 and copy.endswith(os.path.splitext(name)[1])
        (tmp_path / copy).write_bytes(b"")  # the file system takes it


@pytest.mark.parametrize("name", ["m\ntouch pwned #.onnx", "m\r.onnx"])
def test_export_refuses_an_output_name_with_a_control_character(tmp_path, name):
    assert_user_error(run_cli(["export", "eca_resnet18", "-o", tmp_path / name]), "-o: file name", "\\")
    assert os.listdir(str(tmp_path)) == []


def test_pipeline_refuses_class_folders_its_bundle_could_not_label_before_any_step(images, tmp_path):
    data = tmp_path / "data"
    for name in ["0", "3\nx"]:
        (data / name).mkdir(parents=True)
        for image in sorted(os.listdir(images))[:2]:
            os.link(os.path.join(images, image), str(data / name / image))
    result = run_cli(["pipeline", "eca_resnet18", "--input-size", "32", "--data", data, "--out", tmp_path / "out",
                      "--bundle", tmp_path / "b"])
    assert_user_error(result, "class 1 is named '3\\nx'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["conv\nTRT-0-x", "conv\rx", "conv\u2028x", ""])
def test_a_calibration_cache_never_holds_a_name_that_breaks_its_lines(name):
    from deploy.calib_cache import format_calibration_cache, parse_calibration_cache
    with pytest.raises(UserError, match="cannot be written to a calibration cache"):
        format_calibration_cache({"ok": 0.5, name: 0.25}, "10.3")
    text = format_calibration_cache({"conv1/convolution:0": 0.5, "a;b \"c\"": 0.25}, "10.3")
    assert set(parse_calibration_cache(text).scales) == {"conv1/convolution:0", "a;b \"c\""}


def test_deploy_infer_prints_names_with_control_characters_escaped(model_copy, images, capsys):
    from deploy.infer import main as infer_main
    source = os.path.join(images, sorted(os.listdir(images))[0])
    hostile = os.path.join(images, "cat\x1b[2J\nerror: fake.png")
    os.rename(source, hostile)
    assert infer_main([model_copy, hostile, "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "cat\\x1b[2J\\x0aerror: fake.png" in out.splitlines()[0]


KEYFILE_NAMES = ["a ", " b", "c;d", "e\\f", "x=y", "#z", "[g]", "é ü", "\\s", "\\n"]


@pytest.mark.parametrize("as_list", [False, True])
def test_glib_reads_back_every_key_file_value(tmp_path, as_list):
    from bundling.formats import keyfile_line
    path = str(tmp_path / "k.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[property]\n" + "".join(keyfile_line("k{}".format(i), name, as_list) + "\n"
                                              for i, name in enumerate(KEYFILE_NAMES)))
    keys = ["k{}".format(i) for i in range(len(KEYFILE_NAMES))]
    assert keys_once(path) == keys
    values = glib_key_file(path, list_keys=keys if as_list else ())
    if values is None:
        pytest.skip("libglib-2.0 is not installed")
    assert [values[key] for key in keys] == ([[name] for name in KEYFILE_NAMES] if as_list else KEYFILE_NAMES)


@pytest.mark.parametrize("name", ["a\nb", "a\rb"])
def test_a_key_file_value_never_holds_a_line_break(name):
    from bundling.formats import keyfile_value
    with pytest.raises(UserError, match="control character"):
        keyfile_value("logits" + name + "model-engine-file=/tmp/evil.engine")


def test_protobuf_text_strings_read_back_exactly():
    from bundling.formats import pbtxt_string
    names = ["a\rb", "a\nb", 'q"uote', "back\\slash", "\x00nul", "ünï", "tab\t", "'single'"]
    config = model_config_pb2.ModelConfig()
    text_format.Parse("".join("input [ {{ name: {} }} ]\n".format(pbtxt_string(n)) for n in names), config)
    assert [tensor.name for tensor in config.input] == names
