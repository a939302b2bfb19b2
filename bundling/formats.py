"""One writer per format the bundle writes for another program to parse: the shell (build_engines.sh and the
README's command lines), GLib key files (DeepStream's nvinfer configs) and protobuf text (Triton's config.pbtxt).

A name from a model or a folder is data. Each function here either writes it so that the format's own parser
gives back exactly that name, or refuses it with one line; no other module formats these by hand. Labels files
are deploy.names' (the device reads them too).
"""
import shlex
from typing import Iterable

from deploy.names import check_name, terminal_text


# -- the shell -----------------------------------------------------------------------------------------------

def shell_word(text: str, what: str = "name") -> str:
    """One shell word. shlex.quote would keep a line break inside quotes, which is right for sh but makes the
    command two lines of a README or a comment, so a control character is refused instead."""
    return shlex.quote(check_name(str(text), what))


def shell_command(words: Iterable[str]) -> str:
    return " ".join(shell_word(word, "command word") for word in words)


def shell_comment(text: str) -> str:
    """A ``# ...`` line: a comment ends at the line break, so every control character is shown escaped and what
    follows can never become a command."""
    return "# " + terminal_text(text)


# -- GLib key files (nvinfer) ----------------------------------------------------------------------------------

def keyfile_value(text, list_item: bool = False) -> str:
    """A value of a GLib key file as g_key_file_get_string / get_string_list read it back. A line break would
    end the value and start a key of the attacker's choosing, so control characters are refused; a backslash,
    leading white space (stripped by GLib) and, in a list, the ';' separator are escaped as GLib defines."""
    value = check_name(str(text), "key-file value").replace("\\", "\\\\")
    if list_item:
        value = value.replace(";", "\\;")
    if value[:1] == " ":
        value = "\\s" + value[1:]
    return value


def keyfile_line(key: str, value, list_item: bool = False) -> str:
    return "{}={}".format(key, keyfile_value(value, list_item))


def keyfile_comment(text: str) -> str:
    return "# " + terminal_text(text)


# -- protobuf text (Triton) ----------------------------------------------------------------------------------------

def pbtxt_string(text: str) -> str:
    """A protobuf text-format string literal, escaped by protobuf's own CEscape (a \\r, a quote, a backslash and
    every other byte text_format would misread), UTF-8 kept readable."""
    from google.protobuf.text_encoding import CEscape
    return '"{}"'.format(CEscape(str(text).encode("utf-8"), as_utf8=True))


def pbtxt_comment(text: str) -> str:
    return "# " + terminal_text(text)
