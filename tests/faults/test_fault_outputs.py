"""Outputs: --force replaces only a previous bundle, full or read-only disks are one line, a failed or killed
run leaves the previous artifacts whole and its own temp files are cleaned up by the next run."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from deploy.fileio import atomic_path, remove_stale_temps, staged_files, write_text
from tests.faults.conftest import assert_user_error, listing, run_cli, wait_for_stderr

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture()
def precious(tmp_path):
    """A folder of someone's files, which no bundle --force may touch."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub").mkdir()
    (folder / "sub" / "data.csv").write_text("1,2,3")
    return folder


def test_force_refuses_the_current_folder(model_copy, precious, monkeypatch):
    monkeypatch.chdir(str(precious))
    before = listing(precious)
    assert_user_error(run_cli(["bundle", model_copy, "-o", ".", "--force"]), "current folder")
    assert listing(precious) == before


def test_force_refuses_home(model_copy, precious, monkeypatch):
    monkeypatch.setenv("HOME", str(precious))
    before = listing(precious)
    assert_user_error(run_cli(["bundle", model_copy, "-o", "~", "--force"]), "home folder")
    assert listing(precious) == before


def test_force_refuses_the_inputs_folder(model_copy):
    folder = os.path.dirname(model_copy)
    before = listing(folder)
    assert_user_error(run_cli(["bundle", model_copy, "-o", folder, "--force"]), "input")
    assert listing(folder) == before


def test_force_refuses_a_folder_that_is_not_a_bundle(model_copy, precious):
    before = listing(precious)
    assert_user_error(run_cli(["bundle", model_copy, "-o", precious, "--force"]), "not one")
    assert listing(precious) == before
    (precious.parent / "file.tar.gz").write_bytes(b"not a tarball")
    assert_user_error(run_cli(["bundle", model_copy, "-o", precious.parent / "file.tar.gz", "--force"]))
    assert (precious.parent / "file.tar.gz").read_bytes() == b"not a tarball"


def test_force_replaces_a_previous_bundle(model_copy, tmp_path):
    output = tmp_path / "bundle"
    assert run_cli(["bundle", model_copy, "-o", output, "--no-reference"]).exit_code == 0
    assert_user_error(run_cli(["bundle", model_copy, "-o", output, "--no-reference"]), "--force")
    (output / "extra.txt").write_text("left by the user inside the bundle")
    result = run_cli(["bundle", model_copy, "-o", output, "--force", "--no-reference"])
    assert result.exit_code == 0, result.stderr
    assert not (output / "extra.txt").exists() and (output / "tiny.onnx").exists()


def test_full_disk_during_export(tmp_path, tiny_checkpoint, monkeypatch):
    code, words = errno.ENOSPC, "the disk is full"
    import onnx

    def failing_save(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(onnx, "save", failing_save)
    out = tmp_path / "out.onnx"
    result = run_cli(["export", "eca_resnet18", "--weights", tiny_checkpoint, "--input-size", "32",
                      "--no-simplify", "-o", out])
    assert_user_error(result, str(out), words)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only")])
def test_full_or_read_only_disk_during_bundle(model_copy, tmp_path, monkeypatch, code, words):
    import shutil
    real_copy = shutil.copy2

    def failing_copy(src, dst, **kwargs):
        if str(src).endswith(".onnx"):
            raise shutil.Error([(src, dst, "[Errno {}] {}".format(code, os.strerror(code)))])
        return real_copy(src, dst, **kwargs)
    monkeypatch.setattr(shutil, "copy2", failing_copy)
    result = run_cli(["bundle", model_copy, "-o", tmp_path / "out" / "bundle", "--no-reference"])
    assert_user_error(result, "bundle", words)
    assert os.listdir(str(tmp_path / "out")) == []


def test_calib_cache_path_that_is_a_folder_replaces_nothing(model_copy, images):
    folder = os.path.dirname(model_copy)
    with open(os.path.join(folder, "tiny.int8.tensorrt.onnx"), "w") as handle:
        handle.write("the previous int8 model")
    os.mkdir(os.path.join(folder, "tiny.calib.cache"))
    before = listing(folder)
    result = run_cli(["calibrate", model_copy, "--data", images, "--num-images", "2", "--workers", "0"])
    assert_user_error(result, "tiny.calib.cache", "folder")
    assert listing(folder) == before


def test_a_failed_set_leaves_the_previous_set_whole(tmp_path):
    paths = [str(tmp_path / name) for name in ("a.onnx", "b.cache", "c.json")]
    for path in paths:
        write_text(path, "old")
    with pytest.raises(RuntimeError):
        with staged_files(paths) as staged:
            write_text(staged[paths[0]], "new")
            write_text(staged[paths[1]], "new")
            raise RuntimeError("the third artifact failed")
    assert [open(p).read() for p in paths] == ["old"] * 3
    assert sorted(os.listdir(str(tmp_path))) == ["a.onnx", "b.cache", "c.json"]
    with staged_files(paths) as staged:
        for path in paths:
            write_text(staged[path], "new")
    assert [open(p).read() for p in paths] == ["new"] * 3


def test_stale_temp_files_of_killed_runs_are_removed_and_nothing_else(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 3600
    stale = [".model.onnx.{}-abc123.part".format(dead.pid), ".model.onnx.k3j4h5.part",
             "..model.onnx.{0}-abc123.part.{0}-def456.part".format(dead.pid)]
    kept = [".model.onnx.{}-live12.part".format(os.getpid()), ".other.onnx.x1y2z3.part", "model.onnx.part",
            "notes.part", ".model.onnx.backup"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 100)
        os.utime(str(tmp_path / name), (old, old))
    fresh = ".model.onnx.k9k9k9.part"  # written after this run started: a concurrent run's, left alone
    (tmp_path / fresh).write_bytes(b"x")
    with atomic_path(str(tmp_path / "model.onnx")) as tmp:
        with open(tmp, "w") as handle:
            handle.write("model")
    assert sorted(os.listdir(str(tmp_path))) == sorted(kept + [fresh, "model.onnx"])
    assert remove_stale_temps(str(tmp_path / "model.onnx")) == 0


@pytest.mark.parametrize("signals", [1, 2])
def test_interrupt_exits_130_with_one_word(tmp_path, signals):
    """Ctrl-C (once, or twice while cleaning up) in the middle of a command: exit 130, "interrupted", no
    traceback, no temp files left."""
    script = ("import sys, time; sys.argv = ['cli.py', 'models']; import cli\n"
              "from commands import models as m\n"
              "def slow(*a, **k):\n"
              "    sys.stderr.write('working\\n'); sys.stderr.flush()\n"
              "    try:\n        time.sleep(30)\n    finally:\n        time.sleep(0.5 if {} > 1 else 0)\n"
              "m.models_command.callback = slow\n"
              "sys.exit(cli.main())\n").format(signals)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            universal_newlines=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert "working" in wait_for_stderr(proc, "working", 60)
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
