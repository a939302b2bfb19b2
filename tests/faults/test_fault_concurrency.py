"""Concurrent runs into one output (issue 29): a second pipeline run into the same --out refuses at once in one
line naming the first run's pid, before it reads or writes any state; a lock left by a dead run is taken over."""
import os
import subprocess
import sys
import threading

import pytest

from deploy.errors import UserError
from pipeline.lock import LOCK_FILE, out_lock
from tests.faults.conftest import assert_user_error, listing, run_cli

HOLD = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"%d\n" % os.getpid())
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture()
def held(tmp_path):
    """--out whose lock another process holds (a pipeline run in progress), and that process."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "pipeline_state.json").write_text('{"format": 1, "steps": {"bundle": "the first run\'s record"}}')
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / LOCK_FILE)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield out, holder
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_second_pipeline_run_into_one_out_refuses_in_one_line(held, images, tmp_path):
    out, holder = held
    before = listing(out)
    result = run_cli(["pipeline", "eca_resnet18", "--input-size", "32", "--data", images, "--out", out,
                      "--bundle", tmp_path / "b"])
    line = assert_user_error(result, "another pipeline run (pid {})".format(holder.pid), str(out))
    assert "wait for it to end" in line
    assert listing(out) == before and not (tmp_path / "b").exists()


def test_force_does_not_break_another_runs_lock(held, images):
    out, holder = held
    result = run_cli(["pipeline", "eca_resnet18", "--input-size", "32", "--data", images, "--out", out, "--force"])
    assert_user_error(result, "another pipeline run (pid {})".format(holder.pid))


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", HOLD, str(out / LOCK_FILE)], input="", text=True,
                          capture_output=True, timeout=60)  # takes the lock and ends without releasing it
    assert dead.returncode == 0 and (out / LOCK_FILE).read_text().strip().isdigit()
    with out_lock(str(out)) as path:
        assert open(path).read() == "{}\n".format(os.getpid())


def test_runs_in_turn_each_get_the_lock_and_overlapping_ones_refuse(tmp_path):
    out = str(tmp_path / "out")
    inside, refusals = threading.Event(), []
    release = threading.Event()

    def first():
        with out_lock(out):
            inside.set()
            release.wait(30)
    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(30)
    for _ in range(3):
        with pytest.raises(UserError) as raised:
            with out_lock(out):
                pass
        refusals.append(str(raised.value))
    release.set()
    thread.join(30)
    with out_lock(out):  # the first ended: the next run goes ahead
        pass
    assert len(refusals) == 3 and all("pid {}".format(os.getpid()) in r and "\n" not in r for r in refusals)
