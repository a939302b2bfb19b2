"""deploy's own entry points end quietly when the reader of their output goes away (`... | head -1`)."""
import subprocess
import sys

from tests.blocking import ROOT

WRITER = """
import sys
sys.path.insert(0, {root!r})
from deploy.cliutil import run_main
def body():
    for index in range(200000):
        print("line", index)
sys.exit(run_main(body))
"""


def test_a_closed_pipe_is_no_traceback():
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(root=ROOT)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert writer.stdout.readline() == b"line 0\n"
    writer.stdout.close()  # the reader leaves, as `head -1` does
    stderr = writer.stderr.read().decode()
    assert writer.wait(timeout=60) == 141  # 128 + SIGPIPE, as a shell reports it
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
