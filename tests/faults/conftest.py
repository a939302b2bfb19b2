"""Shared pieces of the fault suite: bad inputs are built on the fly from one tiny model and checkpoint."""
import os
import time

import pytest
import torch
from click.testing import CliRunner

import models


def run_cli(args, **kwargs):
    from cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def one_error_line(stderr: str, stdout: str = "") -> str:
    """The promise under test: exactly one `error:` line on stderr and no traceback anywhere."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    return errors[0]


def assert_user_error(result, *fragments) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.stdout)
    line = one_error_line(result.stderr, result.stdout)
    for fragment in fragments:
        assert fragment in line, line
    return line


def listing(folder) -> dict:
    """{name: bytes} of a folder's files, to show that a refusal changed and deleted nothing."""
    found = {}
    for root, _, files in os.walk(str(folder)):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with open(path, "rb") as handle:
                    found[os.path.relpath(path, str(folder))] = handle.read()
    return found


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 10-class narrow ECA-ResNet-18 state dict."""
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny.pth")
    torch.save(models.create_model("eca_resnet18", num_classes=10, stem_width=16).state_dict(), path)
    return path


@pytest.fixture()
def model_copy(tiny_imagenet_onnx, tmp_path):
    """A fresh copy of the suite's tiny model (1000 classes, 32x32, random weights, eca-deploy metadata) in a
    folder of its own; the session fixture is shared with the rest of the suite, so it costs nothing here."""
    import shutil
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "tiny.onnx"
    shutil.copy(tiny_imagenet_onnx, str(path))
    return str(path)


@pytest.fixture()
def images(tmp_path):
    """A flat folder of four small real photos (scikit-image's, shipped in deploy/samples)."""
    from PIL import Image
    from deploy.images import sample_images
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sample_images()[:4]:
        with Image.open(path) as image:
            image.convert("RGB").resize((48, 40)).save(str(folder / (os.path.splitext(os.path.basename(path))[0]
                                                                     + ".png")))
    return str(folder)


def wait_for_stderr(proc, text: str, seconds: float = 60) -> str:
    """What a running subprocess wrote to stderr until a line containing ``text``; AssertionError if it never
    does (it exited, or ``seconds`` passed). The signal tests send their signal right after."""
    deadline, seen = time.time() + seconds, ""
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError("never said {!r}: {}".format(text, seen))
