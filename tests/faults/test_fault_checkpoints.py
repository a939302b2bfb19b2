"""Bad checkpoints: one line, exit 2, no ONNX file left behind, never the advice to unpickle unsafely."""
import os
import pickle

import pytest
import torch

from tests.faults.conftest import assert_user_error, run_cli


def _export(tmp_path, weights):
    out = tmp_path / "out.onnx"
    result = run_cli(["export", "eca_resnet18", "--weights", weights, "--input-size", "32", "--no-simplify",
                      "-o", out])
    assert not out.exists() and not [p for p in os.listdir(str(tmp_path)) if p.endswith(".part")]
    return result


def _state_dict(tiny_checkpoint):
    return torch.load(tiny_checkpoint, weights_only=True)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned",))


@pytest.mark.parametrize("name,write,fragment", [
    ("text", lambda p, sd: p.write_text("this is a text file\n" * 10), ""),
    ("hello", lambda p, sd: p.write_text("hello world\n"), ""),
    ("random", lambda p, sd: p.write_bytes(os.urandom(4096)), ""),
    ("empty", lambda p, sd: p.write_bytes(b""), ""),
    ("integer keys", lambda p, sd: torch.save({i: t for i, t in enumerate(sd.values())}, str(p)),
     "keys must be parameter names"),
    ("even kernel", lambda p, sd: torch.save(dict(sd, **{"layer1.0.eca.conv.weight": torch.zeros(1, 1, 4)}),
                                             str(p)), "kernel size 4"),
    ("nan weights", lambda p, sd: torch.save(dict(sd, **{"fc.bias": torch.full((10,), float("nan"))}), str(p)),
     "NaN or infinite"),
    ("a list", lambda p, sd: torch.save(list(sd.values()), str(p)), "not a state dict"),
    ("malicious pickle", lambda p, sd: p.write_bytes(pickle.dumps({"x": _Evil()})), ""),
    ("malicious torch.save", lambda p, sd: torch.save({"x": _Evil()}, str(p)), "GLOBAL posix.system"),
])
def test_bad_checkpoint_is_one_line(tmp_path, tiny_checkpoint, name, write, fragment):
    path = tmp_path / "bad.pth"
    write(path, _state_dict(tiny_checkpoint))
    result = _export(tmp_path, path)
    line = assert_user_error(result, fragment)
    assert "owned" not in result.stdout
    assert "weights_only" not in line  # never advise loading an untrusted file with weights_only=False
    assert str(path) in line


def test_pipeline_with_a_text_checkpoint(tmp_path):
    ckpt = tmp_path / "notes.pth"
    ckpt.write_text("not a checkpoint\n")
    result = run_cli(["pipeline", "eca_resnet18", "--weights", ckpt, "--out", tmp_path / "out", "--input-size",
                      "32"])
    assert_user_error(result, str(ckpt))


def test_export_opset_out_of_range_prints_no_graph(tmp_path):
    for opset in ("40", "12"):
        result = run_cli(["export", "eca_resnet18", "--opset", opset, "--input-size", "32", "-o",
                          tmp_path / "x.onnx"])
        assert result.exit_code == 2 and "Traceback" not in result.stderr
        assert result.stdout == "" and "graph(" not in result.stderr
