"""Names from a model or a folder are data: the rules for showing them and for writing them as labels.

A tensor name, a file name or a class-folder name reaches shell scripts, configs, labels files and the terminal.
A line break in one ends a shell comment (and what follows runs), adds a key to a GLib key file, or shifts every
label after it; an escape sequence rewrites the terminal. So:

- ``check_name`` refuses a name that holds a control character or a line/paragraph separator (Unicode Cc, Zl,
  Zp): nothing real is named like that, and no format we write can hold one safely everywhere;
- ``label_problem`` says why a class name cannot be one line of a labels file, as the device reads it back
  (``read_label_names``: lines split at \\r, \\n or \\r\\n, each stripped): a control character, an empty name,
  or white space at either end (a no-break space included) that the reader would strip;
- ``write_label_file`` writes one name per line and reads the file back with that reader before anyone else
  sees it, so a labels file never says other names than the ones meant;
- ``terminal_text`` escapes control characters for printing, so one message stays one line;
- ``numbered_name`` is the ``NN_<name>`` of the bundle's sample and probe copies, kept within a file name's
  255 bytes.

Torch-free and Python 3.8, like the rest of deploy/.
"""
import hashlib
import os
import unicodedata
from typing import List, Optional, Sequence

from .errors import UserError

# What ends a line, or may, in the readers that meet our files: the shell and GLib (\n), our labels reader
# (\r, \n), Python's str.splitlines (also \v, \f, \x1c-\x1e, \x85) and editors (U+2028, U+2029).
_UNSAFE_CATEGORIES = ("Cc", "Zl", "Zp")
# Bidirectional overrides and isolates reorder what a terminal shows ("Trojan source"); escaped when printed.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# ext4, XFS, btrfs: a file name is at most 255 bytes
NAME_MAX = 255


def unsafe_character(text: str) -> Optional[str]:
    """The first control character or line/paragraph separator in ``text``, or None."""
    for character in text:
        if unicodedata.category(character) in _UNSAFE_CATEGORIES:
            return character
    return None


def _escape(character: str) -> str:
    code = ord(character)
    return "\\x{:02x}".format(code) if code < 0x100 else "\\u{:04x}".format(code)


def terminal_text(text) -> str:
    """``text`` for a terminal or a log: control characters, separators and bidi overrides as \\xNN / \\uNNNN
    escapes, so it is one line and shows what it holds."""
    return "".join(_escape(c) if c in _BIDI or unicodedata.category(c) in _UNSAFE_CATEGORIES else c
                   for c in str(text))


def check_name(name: str, what: str, source: str = "") -> str:
    """``name`` when it holds no control character; else a UserError naming it, escaped, and where it is."""
    character = unsafe_character(name)
    if character is None:
        return name
    raise UserError("{}{} {!r} holds the control character {}; names are written into shell scripts and configs, "
                    "so rename it".format(source + ": " if source else "", what, name, _escape(character)))


# -- labels ------------------------------------------------------------------------------------------------

def label_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be one line of a labels file that reads back as ``name``; None when it can."""
    if not isinstance(name, str):
        return "it is not text"
    character = unsafe_character(name)
    if character is not None:
        return "it holds the control character {}".format(_escape(character))
    if not name.strip():
        return "it is empty or only white space"
    if name != name.strip():
        return "it starts or ends with white space, which a labels reader strips"
    return None


def check_label_names(names: Sequence[str], source: str) -> List[str]:
    """Every class name can be one labels line; else one UserError naming the first bad one and its class."""
    for index, name in enumerate(names):
        problem = label_problem(name)
        if problem:
            raise UserError("{}: class {} is named {!r}, and {}; a labels file cannot hold that name as one line, "
                            "so rename it".format(source, index, name, problem))
    return list(names)


def read_label_names(path) -> List[str]:
    """The class names of a labels file as the device reads them: one per line, stripped, trailing blank lines
    dropped (deploy.infer's --labels and the bundle's labels.txt)."""
    from .text import read_text_lines
    names = [line.strip() for line in read_text_lines(path, "labels file")]
    while names and not names[-1]:
        names.pop()
    return names


def label_file_text(names: Sequence[str], source: str) -> str:
    return "".join(name + "\n" for name in check_label_names(names, source))


def write_label_file(path: str, names: Sequence[str], source: str) -> None:
    """One name per line, then read back with the device's reader: a file that would read otherwise is a
    UserError, never a shifted label."""
    from .fileio import write_text
    write_text(path, label_file_text(names, source))
    check_read_back(path, list(names), read_label_names(path))


def check_read_back(path: str, meant: List[str], read: List[str]) -> None:
    """A labels file read back must give exactly the names it was written from."""
    if read == meant:
        return
    first = next((i for i, (a, b) in enumerate(zip(meant, read)) if a != b), min(len(meant), len(read)))
    raise UserError("{} reads back as {} names instead of {} (class {}: {!r} instead of {!r}); it was not "
                    "kept".format(path, len(read), len(meant), first, read[first] if first < len(read) else None,
                                  meant[first] if first < len(meant) else None))


# -- file names ----------------------------------------------------------------------------------------------

def numbered_name(index: int, name: str) -> str:
    """``NN_name``: the name of the index-th copy of ``name`` in one folder. When the prefix would take it past
    NAME_MAX bytes, its stem is cut (at a character boundary) and a hash of the whole name keeps it unique; the
    extension stays, since the reader picks images by it."""
    numbered = "{:02d}_{}".format(index, name)
    if len(numbered.encode("utf-8", "surrogateescape")) <= NAME_MAX:
        return numbered
    stem, extension = os.path.splitext(name)
    tail = "-{}{}".format(hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12], extension)
    budget = NAME_MAX - len("{:02d}_".format(index).encode()) - len(tail.encode("utf-8", "surrogateescape"))
    encoded = stem.encode("utf-8", "surrogateescape")[:max(budget, 0)]
    return "{:02d}_{}{}".format(index, encoded.decode("utf-8", "ignore"), tail)
