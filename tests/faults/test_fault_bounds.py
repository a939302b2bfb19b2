"""Size-like options have bounds (deploy.validate), stated in --help and checked before any heavy import: a
refusal is one line naming the flag, exit 2, and costs little memory. Also: --mean/--std must be finite with
std > 0, a failed export leaves no model behind, and any file name the file system takes can be written."""
import json
import os
import subprocess
import sys

import pytest

from deploy.fileio import atomic_path, remove_stale_temps, staged_files, write_text
from deploy.validate import MAX_BATCH, MAX_INPUT_SIZE, THREADS_PER_CORE, max_threads
from tests.faults.conftest import assert_user_error, listing, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFUSAL_MEMORY_MB = 500
HUGE = "100000000"


def _refused_commands(model, images):
    return [
        (["export", "eca_resnet18", "--input-size", "100000"], "--input-size"),
        (["export", "eca_resnet18", "--input-size", "32", "--resize", "100000"], "--resize"),
        (["export", "eca_resnet18", "--batch", HUGE], "--batch"),
        (["export", "eca_resnet18", "--eca-convs", "100000"], "--eca-convs"),
        (["models", "--input-size", "100000"], "--input-size"),
        (["benchmark-engine", model, "--threads", "100000"], "--threads"),
        (["benchmark-engine", model, "--batch-sizes", "1,{}".format(HUGE)], "--batch-sizes"),
        (["benchmark-engine", model, "--iterations", HUGE], "--iterations"),
        (["benchmark-engine", model, "--num-images", HUGE], "--num-images"),
        (["calibrate", model, "--data", images, "--workers", "100000"], "--workers"),
        (["compare-layers", model, model, "--data", images, "--num-images", HUGE], "--num-images"),
        (["attention", "eca_resnet18", "--data", images, "--batch-size", HUGE], "--batch-size"),
        (["bundle", model, "-o", "b", "--max-batch", HUGE], "--max-batch"),
        (["pipeline", "--warmup", HUGE], "--warmup"),
        (["pipeline", "--input-size", "32", "--crop", "32", "--resize", "100000"], "--resize"),
    ]


def test_every_size_like_option_is_bounded(model_copy, images):
    for args, flag in _refused_commands(model_copy, images):
        before = listing(os.path.dirname(images))
        line = assert_user_error(run_cli(args), flag)
        assert "limit" in line, line
        assert listing(os.path.dirname(images)) == before


def test_threads_are_bounded_by_the_cores(model_copy):
    line = assert_user_error(run_cli(["benchmark-engine", model_copy, "--threads", str(max_threads() + 1)]))
    assert "{} per core".format(THREADS_PER_CORE) in line and str(max_threads()) in line


def test_bounds_are_stated_in_help():
    for command, flag, bound in (("export", "--input-size", MAX_INPUT_SIZE), ("export", "--resize", MAX_INPUT_SIZE),
                                 ("benchmark-engine", "--threads", max_threads()),
                                 ("benchmark-engine", "--batch-sizes", MAX_BATCH),
                                 ("calibrate", "--workers", max_threads()), ("pipeline", "--iterations", None)):
        text = " ".join(run_cli([command, "--help"]).stdout.split())
        after = text[text.index(flag):][:400]
        assert "at most" in after.lower() and (bound is None or str(bound) in after), (command, flag, after)


def test_refusals_cost_little_memory(model_copy, images):
    """Peak RSS of each refused command, in a fresh parent that waits for nothing else (what time -v reports)."""
    probe = ("import resource, subprocess, sys\n"
             "proc = subprocess.run([sys.executable, 'cli.py'] + sys.argv[1:], stdout=subprocess.DEVNULL,"
             " stderr=subprocess.PIPE, universal_newlines=True)\n"
             "print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n")
    for args, flag in _refused_commands(model_copy, images)[:6]:
        proc = subprocess.run([sys.executable, "-c", probe] + args, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
        code, peak_mb = (int(word) for word in proc.stdout.split())
        assert code == 2 and peak_mb < REFUSAL_MEMORY_MB, (args, code, peak_mb)


def test_an_input_size_beyond_memory_is_refused_with_the_bytes_it_needs(tmp_path, monkeypatch):
    import deploy.validate
    monkeypatch.setattr(deploy.validate, "available_memory_bytes", lambda: 256 << 20)
    out = tmp_path / "m.onnx"
    result = run_cli(["export", "eca_resnet18", "--input-size", "1024", "-o", out])
    line = assert_user_error(result, "--input-size", "bytes", "1024x1024")
    assert "{} bytes".format(4 * 3 * 1024 * 1024 * 4 * (deploy.validate.ACTIVATION_FACTOR + 1)) in line
    result = run_cli(["export", "eca_resnet18", "--input-size", "32", "--num-classes", "100000", "-o", out])
    assert_user_error(result, "--num-classes", "100000 classes", "bytes")
    assert not out.exists()


@pytest.mark.parametrize("flag,value,words", [("--mean", "nan,0.5,0.5", "finite"), ("--std", "0.2,inf,0.2", "finite"),
                                              ("--std", "0.2,0,0.2", "above 0"), ("--std", "-0.2,0.2,0.2", "above 0")])
def test_mean_and_std_must_be_finite_and_std_positive(tmp_path, flag, value, words):
    result = run_cli(["export", "eca_resnet18", "--input-size", "32", flag, value, "-o", tmp_path / "m.onnx"])
    assert_user_error(result, words)
    assert os.listdir(str(tmp_path)) == []


def test_a_failed_parity_check_leaves_the_previous_model(tmp_path, tiny_checkpoint, monkeypatch):
    import exporter.api

    class Disagrees:
        max_abs_error = float("nan")

        def __bool__(self):
            return False
    monkeypatch.setattr(exporter.api, "check_parity", lambda *args, **kwargs: Disagrees())
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous model")
    result = run_cli(["export", "eca_resnet18", "--weights", tiny_checkpoint, "--input-size", "32", "--no-simplify",
                      "-o", out])
    assert result.exit_code == 1 and "max abs error nan" in result.stderr and "Traceback" not in result.stderr
    assert out.read_bytes() == b"the previous model" and os.listdir(str(tmp_path)) == ["m.onnx"]


def test_an_output_below_a_file_names_the_file(tmp_path):
    (tmp_path / "f").write_text("a file")
    result = run_cli(["export", "eca_resnet18", "--input-size", "32", "-o", tmp_path / "f" / "m.onnx"])
    line = assert_user_error(result, "{} is not a folder".format(tmp_path / "f"))
    assert "File exists" not in line
    with pytest.raises(Exception, match="is not a folder"):
        write_text(str(tmp_path / "f" / "deeper" / "x.json"), "{}")


def test_a_name_as_long_as_the_file_system_allows_is_written(tmp_path):
    name_max = os.pathconf(str(tmp_path), "PC_NAME_MAX")
    for length in (236, name_max):
        path = str(tmp_path / ("m" * (length - 5) + ".onnx"))
        write_text(path, "model")
        with staged_files([path, str(tmp_path / "short.json")]) as staged:
            for final, tmp in staged.items():
                assert len(os.path.basename(tmp)) <= name_max
                write_text(tmp, json.dumps(final))
        assert open(path).read() == json.dumps(path)
    assert sorted(len(n) for n in os.listdir(str(tmp_path))) == sorted([10, 236, name_max])


def test_stale_temps_of_a_long_name_are_found(tmp_path):
    path = str(tmp_path / ("m" * 240 + ".onnx"))
    killed = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, {!r})\n"
                             "from deploy.fileio import atomic_path\n"
                             "import os\n"
                             "with atomic_path({!r}) as tmp:\n"
                             "    open(tmp, 'w').write('half')\n"
                             "    os._exit(9)\n".format(ROOT, path)], timeout=60)
    assert killed.returncode == 9 and len(os.listdir(str(tmp_path))) == 1
    old = os.path.getmtime(str(tmp_path / os.listdir(str(tmp_path))[0])) - 3600
    os.utime(str(tmp_path / os.listdir(str(tmp_path))[0]), (old, old))
    assert remove_stale_temps(path) == 1 and os.listdir(str(tmp_path)) == []
    with atomic_path(path) as tmp:
        write_text(tmp, "whole")
    assert os.listdir(str(tmp_path)) == [os.path.basename(path)]


@pytest.mark.parametrize("args", [["benchmark-engine", "x.onnx", "--threads", "0"], ["export", "--bogus"],
                                  ["no-such-command"]])
def test_usage_errors_are_one_line_too(args, tmp_path):
    """click's own usage errors (a value below an option's minimum, an unknown option or command) read like every
    other user error: one line, exit 2."""
    from tests.blocking import ROOT
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py")] + args, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], proc.stderr
