"""FIFOs, sockets, devices and links to them among the images: skipped with one counted note, never opened.

Opening a FIFO for reading blocks until a writer comes, so each test that could hang runs under an alarm.
"""
import os
import signal
import socket

import pytest

from data.datasets import discover
from deploy.errors import UserError
from deploy.images import collect_images, ignored_note
from deploy.infer import main as infer_main
from deploy.preprocess import decode_image
from tests.faults.conftest import assert_user_error, run_cli

HANG_SECONDS = 120


@pytest.fixture()
def no_hang():
    """Fail (instead of blocking the suite forever) when a reader opens a FIFO: SIGALRM interrupts open()."""
    def blocked(signum, frame):
        raise AssertionError("blocked for {} s: something opened a special file".format(HANG_SECONDS))
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def special_images(images):
    """The four real photos, plus x.png a FIFO, s.png a socket, null.png a link to /dev/null and fifo_link.png a
    link to the FIFO: four files that only look like images."""
    os.mkfifo(os.path.join(images, "x.png"))
    os.symlink("x.png", os.path.join(images, "fifo_link.png"))
    os.symlink(os.devnull, os.path.join(images, "null.png"))
    server = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(images)  # a relative name: a socket path may hold only about 100 characters
    try:
        server.bind("s.png")
    finally:
        os.chdir(cwd)
    yield images
    server.close()


def test_a_folder_walk_lists_regular_files_only_and_counts_the_rest(special_images, no_hang):
    found = discover(special_images)
    assert len(found) == 4 and all(os.path.isfile(path) for path in found.paths)
    note = next(note for note in found.notes if "not regular files" in note)
    assert note.startswith("skipped 4 file(s) that are not regular files") and len(note.splitlines()) == 1


def test_a_fifo_given_directly_is_left_out_with_the_same_note(special_images, no_hang):
    ignored = []
    fifo = os.path.join(special_images, "x.png")
    paths = collect_images([fifo, os.path.join(special_images, "fifo_link.png")], ignored)
    assert paths == [] and ignored_note(ignored).startswith("skipped 2 file(s) that are not regular files (e.g. ")
    assert "a FIFO" in ignored_note(ignored)
    with pytest.raises(UserError, match="not an image file"):
        collect_images([fifo])  # no list to count it in: an error, not a silent drop


@pytest.mark.parametrize("name,kind", [("x.png", "a FIFO"), ("s.png", "a socket"),
                                       ("null.png", "a character device")])
def test_the_decoder_refuses_before_opening(special_images, no_hang, name, kind):
    with pytest.raises(UserError, match="it is {}, not a regular file".format(kind)):
        decode_image(os.path.join(special_images, name))


def test_deploy_infer_does_not_block_on_a_fifo_in_the_folder(model_copy, special_images, no_hang, capsys):
    assert infer_main([model_copy, special_images, "--json"]) == 0
    captured = capsys.readouterr()
    assert sum('"path"' in line for line in captured.out.splitlines()) == 4
    notes = [line for line in captured.err.splitlines() if "not regular files" in line]
    assert len(notes) == 1 and "skipped 4 file(s)" in notes[0] and "Traceback" not in captured.err


def test_calibrate_does_not_block_on_a_fifo_in_the_folder(model_copy, special_images, no_hang, tmp_path):
    result = run_cli(["calibrate", model_copy, "--data", special_images, "--num-images", "4", "--workers", "0",
                      "--method", "minmax", "-o", tmp_path / "out" / "tiny.int8.onnx"])
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_a_fifo_as_labels_file_is_refused_in_one_line(model_copy, images, no_hang, tmp_path):
    fifo = str(tmp_path / "labels.txt")
    os.mkfifo(fifo)
    result = run_cli(["calibrate", model_copy, "--data", images, "--labels", fifo, "--num-images", "2"])
    assert_user_error(result, "labels.txt", "a FIFO")


def test_a_fifo_as_calibration_cache_is_refused_without_opening(tmp_path, no_hang):
    from deploy.calib_cache import read_calibration_cache
    fifo = str(tmp_path / "tiny.calib.cache")
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="it is a FIFO"):
        read_calibration_cache(fifo)
