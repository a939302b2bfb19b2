"""The one rule for progress bars: on a terminal only, never with --json or when stderr is piped.

Every long loop (image decoding, calibration, layer comparison, benchmark runs) calls ``progress_bar`` and
updates what it returns. The bar is drawn on stderr, only once the work has lasted ``DELAY_S`` seconds, so
short runs print nothing. Without tqdm (a bare Jetson) the bar is a silent stand-in with the same methods;
deploy/ must run on numpy and Pillow alone.
"""
import sys
from typing import Optional

DELAY_S = 2.0  # work shorter than this shows no bar at all


class _NoBar:
    """What ``progress_bar`` returns when no bar is shown: the tqdm methods the loops call, doing nothing."""

    def __init__(self, total: Optional[int] = None):
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


def bars_allowed(enabled: bool = True, stream=None) -> bool:
    """True when a bar may be drawn: the caller allows it (not --json) and ``stream`` (stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(enabled) and stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams (pytest capture, CliRunner)
        return False


def progress_bar(total: Optional[int], desc: str = "", unit: str = "img", enabled: bool = True,
                 stream=None, delay: float = DELAY_S):
    """A tqdm bar on stderr when ``bars_allowed(enabled)``, else a silent stand-in; use as a context manager.

    ``enabled`` is the caller's own switch (False for --json); the terminal test is made here, once for all.
    """
    stream = sys.stderr if stream is None else stream
    if not bars_allowed(enabled, stream):
        return _NoBar(total)
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(total)
    return tqdm(total=total, desc=desc or None, unit=unit, file=stream, delay=delay, dynamic_ncols=True,
                leave=False)
