"""SIGTERM cleans up as Ctrl-C does, and an interrupt at any point (a command's work, staged temp files, the
interpreter's shutdown) gives exit 130, one "interrupted" line, no traceback and no temp files left."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.blocking import ROOT
from tests.faults.conftest import wait_for_stderr

# A cli.py run whose `models` command is replaced by BODY (indented code; `out` is the folder it may write in).
CLI_SCRIPT = """
import os, sys, time
sys.argv = ['cli.py', 'models']
import cli
from commands import models as m
out = {out!r}
def body(*args, **kwargs):
{body}
m.models_command.callback = body
{before_exit}
sys.exit(cli.main())
"""


def _start(body: str, out, before_exit: str = "") -> subprocess.Popen:
    script = CLI_SCRIPT.format(out=str(out), body="\n".join("    " + line for line in body.splitlines()),
                               before_exit=before_exit)
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=dict(os.environ, PYTHONPATH=ROOT))


def _finish(proc: subprocess.Popen, before: str = "") -> str:
    _, err = proc.communicate(timeout=60)
    err = before + err
    assert proc.returncode == 130, err
    assert err.count("interrupted") == 1, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    return err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_staged_temp_files_are_removed(tmp_path, signum):
    """Calibrate writes its artifacts as a staged set of hidden .part files: none may survive a signal."""
    body = ("from deploy.fileio import staged_files\n"
            "names = ['tiny.int8.cpu.onnx', 'tiny.calib.cache', 'tiny.ranges.json']\n"
            "with staged_files([os.path.join(out, n) for n in names]) as temps:\n"
            "    for temp in temps.values():\n"
            "        open(temp, 'w').write('half')\n"
            "    sys.stderr.write('staged\\n'); sys.stderr.flush()\n"
            "    time.sleep(30)\n")
    proc = _start(body, tmp_path)
    seen = wait_for_stderr(proc, "staged")
    assert len(os.listdir(str(tmp_path))) == 3  # the hidden temps exist while it works
    proc.send_signal(signum)
    _finish(proc, seen)
    assert os.listdir(str(tmp_path)) == []


def test_sigterm_during_atomic_write_leaves_nothing(tmp_path):
    body = ("from deploy.fileio import atomic_path\n"
            "with atomic_path(os.path.join(out, 'model.onnx')) as temp:\n"
            "    open(temp, 'w').write('half')\n"
            "    sys.stderr.write('writing\\n'); sys.stderr.flush()\n"
            "    time.sleep(30)\n")
    proc = _start(body, tmp_path)
    seen = wait_for_stderr(proc, "writing")
    proc.send_signal(signal.SIGTERM)
    _finish(proc, seen)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupt_during_the_interpreter_shutdown(tmp_path, signum):
    """The command is done and main() returned; an atexit callback (as thread pools register) still runs when
    the signal comes. A KeyboardInterrupt there would be "Exception ignored in atexit callback" and exit 0."""
    before_exit = ("import atexit\n"
                   "def slow_exit():\n"
                   "    sys.stderr.write('shutting down\\n'); sys.stderr.flush()\n"
                   "    time.sleep(30)\n"
                   "atexit.register(slow_exit)\n")
    proc = _start("print('done', flush=True)\nreturn 0", tmp_path, before_exit)
    seen = wait_for_stderr(proc, "shutting down")
    proc.send_signal(signum)
    _finish(proc, seen)


def test_a_thread_pool_joined_at_shutdown(tmp_path):
    """A worker thread still busy when the command returns is joined by the interpreter before exiting."""
    body = ("from concurrent.futures import ThreadPoolExecutor\n"
            "pool = ThreadPoolExecutor(1)\n"
            "pool.submit(time.sleep, 30)\n"
            "sys.stderr.write('returning\\n'); sys.stderr.flush()\n"
            "return 0")
    proc = _start(body, tmp_path)
    seen = wait_for_stderr(proc, "returning")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _finish(proc, seen)


def test_a_signal_inside_a_held_step_is_raised_after_it(tmp_path):
    """interrupts_held(): a temp file created and recorded, or a set of renames, is never split by a signal."""
    script = ("import os, signal, sys\n"
              "from deploy.interrupts import install_interrupt_handler, interrupts_held\n"
              "install_interrupt_handler()\n"
              "try:\n"
              "    with interrupts_held():\n"
              "        os.kill(os.getpid(), signal.SIGTERM)\n"
              "        for _ in range(1000): pass\n"
              "        print('finished the step', flush=True)\n"
              "    print('not reached', flush=True)\n"
              "except KeyboardInterrupt:\n"
              "    print('raised after it', flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert proc.stdout.split("\n")[:2] == ["finished the step", "raised after it"], proc.stdout + proc.stderr


def test_deploy_entry_points_handle_sigterm(model_copy, images):
    """python -m deploy.infer (argparse, no click) through run_main: the same 130 and one line."""
    script = ("import sys, time\n"
              "from deploy import infer\n"
              "def slow(args):\n"
              "    sys.stderr.write('classifying\\n'); sys.stderr.flush()\n"
              "    time.sleep(30)\n"
              "infer.run = slow\n"
              "sys.exit(infer.main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, model_copy, images], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, env=dict(os.environ, PYTHONPATH=ROOT))
    seen = wait_for_stderr(proc, "classifying")
    proc.send_signal(signal.SIGTERM)
    _finish(proc, seen)
