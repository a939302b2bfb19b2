"""Text that users hand the tool (labels files, ImageNet's LOC_val_solution.csv), read the same way by every
command, and names that may or may not be numbers.

A file is decoded as UTF-8 (a UTF-8 or UTF-16 byte-order mark is honoured and dropped), and when it is not
UTF-8, as Latin-1 (ISO 8859-1), which is what older label lists were saved in. Latin-1 decodes any byte, so a
file in neither encoding (a binary file, a Windows-1252 file with curly quotes) shows up as control characters
instead; the first such line is an error naming the file and the line, never a guess.
"""
import os
import re
from typing import List

from .errors import UserError, os_error
from .filekind import file_kind, is_regular_file

FALLBACK_ENCODING = "latin-1"
# ImageNet's LOC_val_solution.csv is 2.4 MB and the 21k-class names about 1 MB: far above anything real
MAX_TEXT_BYTES = 64 << 20
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# C0 controls but tab, DEL and C1 controls: in a text file they mean a wrong encoding or no text at all
_CONTROL = re.compile("[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAK = re.compile("\r\n|\r|\n")
_PRINTED_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text) -> str:
    """``text`` with every control character (and a line break) written as its Python escape: a name read from a
    model, a proof or a folder is printed as data, so it can neither end a line nor move the terminal's cursor."""
    return _PRINTED_CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), str(text))


def is_ascii_number(text: str) -> bool:
    """Plain ASCII digits only. ``str.isdigit`` is also true for '٣' and '²', which ``int`` reads or refuses."""
    return re.fullmatch("[0-9]+", text) is not None


def decode_text(data: bytes, path: str, what: str = "text file") -> str:
    """``data`` as text by the rule above; UserError naming ``path`` and the line otherwise."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(encoding)
            except UnicodeDecodeError as exc:
                before = data[len(bom):len(bom) + exc.start].decode(encoding, errors="replace")
                raise UserError("{} {} line {}: not valid {} text, though the file starts with its byte-order "
                                "mark".format(what, path, len(_LINE_BREAK.findall(before)) + 1,
                                              encoding.upper())) from None
            break
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode(FALLBACK_ENCODING)
    match = _CONTROL.search(text)
    if match:
        line = len(_LINE_BREAK.findall(text[:match.start()])) + 1
        raise UserError("{} {} line {}: character {!r} is not text; save the file as UTF-8 (or Latin-1)".format(
            what, path, line, match.group()))
    return text


def read_text_lines(path, what: str = "text file") -> List[str]:
    """The lines of a user's text file (without line breaks), decoded by the rule above. A missing path, or
    one that is not a regular file (a FIFO would block the read), is a UserError naming it."""
    path = os.fspath(path)
    if not is_regular_file(path):
        if not os.path.lexists(path):
            raise UserError("no such {}: {}".format(what, path))
        raise UserError("cannot read {} {}: it is {}, not a regular file".format(what, path, file_kind(path)))
    try:
        if os.path.getsize(path) > MAX_TEXT_BYTES:
            raise UserError("{} {} is larger than {} MiB; is it the right file?".format(
                what, path, MAX_TEXT_BYTES >> 20))
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise os_error(exc, path, action="read") from None
    lines = _LINE_BREAK.split(decode_text(data, path, what))
    if lines and lines[-1] == "":  # the final line break ends the last line, it does not start another
        lines.pop()
    return lines
