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
