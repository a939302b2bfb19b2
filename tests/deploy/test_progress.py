"""The one progress-bar rule: a bar on a terminal, none with --json, when piped or without tqdm."""
import io
import sys

from deploy.progress import bars_allowed, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_draws_on_a_terminal_once_the_delay_has_passed():
    stream = Terminal()
    with progress_bar(10, "decoding images", stream=stream, delay=0) as bar:
        bar.update(10)
    assert "decoding images" in stream.getvalue() and "/10 " in stream.getvalue()


def test_no_bar_when_piped_or_with_json_or_for_short_work():
    piped = io.StringIO()
    with progress_bar(10, "x", stream=piped, delay=0) as bar:
        bar.update(10)
    assert piped.getvalue() == "" and bar.n == 10
    terminal = Terminal()
    with progress_bar(10, "x", enabled=False, stream=terminal, delay=0) as bar:
        bar.set_description("y")
        bar.update(3)
    assert terminal.getvalue() == ""
    with progress_bar(10, "quick", stream=terminal) as bar:  # default delay: work under 2 s prints nothing
        bar.update(10)
    assert terminal.getvalue() == ""
    assert not bars_allowed(True, io.StringIO()) and bars_allowed(True, Terminal())


def test_without_tqdm_the_bar_is_silent(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    terminal = Terminal()
    with progress_bar(5, "x", stream=terminal, delay=0) as bar:
        bar.update(5)
    assert terminal.getvalue() == "" and bar.n == 5
