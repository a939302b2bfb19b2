"""Reading a bundle's files as their consumers do: the nvinfer key file, the build script's engine lines."""
import configparser
import os
import shlex


def read_key_file(path: str) -> configparser.ConfigParser:
    """A Gst-nvinfer config read as the GLib key file it is: '=' only, '#' comments, case kept."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",),
                                       inline_comment_prefixes=None, strict=True)
    parser.optionxform = str
    with open(path, "r", encoding="utf-8") as handle:
        parser.read_file(handle)
    return parser


def build_lines(root: str):
    """{model file: its `python3 -m deploy.build` line's words} from the bundle's build_engines.sh."""
    lines = {}
    with open(os.path.join(root, "build_engines.sh"), "r", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("python3 -m deploy.build "):
                words = shlex.split(line)
                lines[words[3]] = words
    return lines


def engine_of(words) -> str:
    return words[words.index("-o") + 1]


def max_batch_of(words, default: int = 8) -> int:
    return int(words[words.index("--max-batch") + 1]) if "--max-batch" in words else default


def glib_key_file(path: str, group: str = "property", list_keys=()):
    """{key: value} of a key file as GLib itself reads it (libglib through ctypes: the parser nvinfer uses), with
    ``list_keys`` read by g_key_file_get_string_list; None where libglib-2.0 is not installed."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("glib-2.0") or "libglib-2.0.so.0"
    try:
        glib = ctypes.CDLL(name)
    except OSError:
        return None
    glib.g_key_file_new.restype = ctypes.c_void_p
    glib.g_key_file_load_from_data.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
                                               ctypes.c_void_p]
    glib.g_key_file_get_keys.restype = ctypes.POINTER(ctypes.c_char_p)
    glib.g_key_file_get_keys.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t),
                                         ctypes.c_void_p]
    glib.g_key_file_get_string.restype = ctypes.c_char_p
    glib.g_key_file_get_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
    glib.g_key_file_get_string_list.restype = ctypes.POINTER(ctypes.c_char_p)
    glib.g_key_file_get_string_list.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                                ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
    with open(path, "rb") as handle:
        data = handle.read()
    key_file = glib.g_key_file_new()
    assert glib.g_key_file_load_from_data(key_file, data, len(data), 0, None), "GLib cannot parse " + path
    count = ctypes.c_size_t()
    keys = glib.g_key_file_get_keys(key_file, group.encode(), ctypes.byref(count), None)
    values = {}
    for index in range(count.value):
        key = keys[index]
        if key.decode() in list_keys:
            length = ctypes.c_size_t()
            items = glib.g_key_file_get_string_list(key_file, group.encode(), key, ctypes.byref(length), None)
            values[key.decode()] = [items[i].decode("utf-8") for i in range(length.value)]
        else:
            value = glib.g_key_file_get_string(key_file, group.encode(), key, None)
            assert value is not None, "GLib cannot read the value of {} in {}".format(key, path)
            values[key.decode()] = value.decode("utf-8")
    return values


def keys_once(path: str):
    """Every key of the key file appears once (GLib would keep the later of two, silently)."""
    with open(path, "r", encoding="utf-8") as handle:
        keys = [line.split("=", 1)[0] for line in handle.read().split("\n")
                if line and not line.startswith(("#", "["))]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    return keys
def derive_batch1_copies(root: str) -> list:
    """Run build_engines.sh's `python3 -m deploy.fixed_batch` lines (the jetson-inference copies it derives on
    the device, with the bundle's own deploy/), as the device would; returns the files written."""
    import subprocess
    import sys
    written = []
    with open(os.path.join(root, "build_engines.sh"), "r", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("python3 -m deploy.fixed_batch "):
                words = shlex.split(line)
                subprocess.run([sys.executable] + words[1:], cwd=root, check=True, stdout=subprocess.DEVNULL,
                               env=dict(os.environ, PYTHONPATH=root))
                written.append(words[-1])
    return written
