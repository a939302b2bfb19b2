"""The README and docs/ say what the code does: metadata keys exist, links resolve, every study has a purpose and
a date, and the README stays a five-minute read."""
import ast
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
# What writes ONNX metadata: export (with the preprocessing and attention forms), precision and calibration.
METADATA_WRITERS = ("deploy/metadata.py", "deploy/preprocess.py", "exporter/*.py", "precision/*.py",
                    "calibration/*.py")
# Where the docs list metadata keys: (document, the words that open the list).
METADATA_LISTS = (("docs/ARCHITECTURE.md", "**ONNX metadata**"),
                  ("docs/INT8.md", "Each INT8 model's ONNX metadata"))
STUDIES = ("INT8", "TENSORRT_VERSIONS", "PERFORMANCE", "FAULTS", "COMMANDS", "ATTENTION", "MODELS_FROM_ELSEWHERE", "BUNDLE")
README_ORDER = ("Two commands", "Bring your own checkpoint", "On the device", "Commands", "Results", "Read more")


def _read(relative):
    with open(os.path.join(ROOT, relative), encoding="utf-8") as handle:
        return handle.read()


def _writer_trees():
    for pattern in METADATA_WRITERS:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern))):
            yield ast.parse(_read(os.path.relpath(path, ROOT)), path)


def _strings(node):
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def metadata_keys():
    """The keys the code writes into ONNX metadata: those of the dicts built and filled in its ``*metadata*``
    functions, and the module constants named ``META*`` or ``*_KEY(S)`` (``META_METHOD``, ``METADATA_KEYS``,
    ``IN_GRAPH_KEY``)."""
    keys = set()
    for tree in _writer_trees():
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and (t.id.startswith("META") or re.search(r"_KEYS?$", t.id))
                    for t in node.targets):
                keys |= _strings(node.value)
        for function in ast.walk(tree):
            if not (isinstance(function, ast.FunctionDef) and "metadata" in function.name):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Dict):
                    keys |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                elif isinstance(node, ast.Assign):
                    keys |= {t.slice.value for t in node.targets if isinstance(t, ast.Subscript)
                             and isinstance(t.slice, ast.Constant) and isinstance(t.slice.value, str)}
    return keys


def metadata_words():
    """Every string the metadata writers hold: keys, and the values some keys take (`split`, `auto`)."""
    words = set()
    for tree in _writer_trees():
        words |= _strings(tree)
    return words


def unknown_metadata_names(names):
    """Names the code does not write: a snake_case name must be a metadata key; a plain word (a key such as
    `arch`, or a value such as `split`) must at least be a string the writers hold."""
    keys, words = metadata_keys(), metadata_words()
    return sorted(n for n in set(names) if (n not in keys if "_" in n else n not in words))


def listed_keys(text, opening):
    """The backticked plain names of the list item that starts with ``opening`` (up to the next item), less the
    project's folders it names as writers or readers (`exporter`, `calibration`)."""
    item = text[text.index(opening):]
    item = re.split(r"\n\s*\* |\n\n", item, maxsplit=1)[0]
    return [key for key in re.findall(r"`([^`]+)`", item)
            if re.fullmatch(r"[a-z][a-z0-9_]*", key) and not os.path.isdir(os.path.join(ROOT, key))]


@pytest.mark.parametrize("document,opening", METADATA_LISTS)
def test_metadata_keys_named_in_the_docs_are_written_by_the_code(document, opening):
    keys = listed_keys(_read(document), opening)
    assert len(keys) >= 5, keys
    assert unknown_metadata_names(keys) == []


def test_every_calibration_key_named_anywhere_is_one_the_code_writes():
    named = set()
    for path in [README] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
        named |= set(re.findall(r"`(calibration_[a-z_]+)`", _read(os.path.relpath(path, ROOT))))
    assert named and unknown_metadata_names(named) == []


def test_a_json_key_is_not_taken_for_a_metadata_key():
    """`heldout_source` is what calibrate's --json says; the model's metadata says `calibration_heldout_source`."""
    assert unknown_metadata_names(["heldout_source", "calibration_heldout_source", "split"]) == ["heldout_source"]


def test_the_readme_is_a_five_minute_read_in_the_issue_order():
    text = _read("README.md")
    assert len(text.splitlines()) <= 300
    headings = [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]
    assert [h for h in headings if h in README_ORDER] == list(README_ORDER)
    assert "source .venv/bin/activate" in text  # a fresh shell's python is not the project's


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_has_a_purpose_a_date_and_a_link_from_the_readme(name):
    text = _read("docs/{}.md".format(name))
    assert re.search(r"^Purpose: ", text, flags=re.MULTILINE)
    assert re.search(r"Date: \d{4}-\d{2}-\d{2}\.", text)
    assert "(docs/{}.md)".format(name) in _read("README.md")


def test_local_links_and_images_resolve():
    for path in [README] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
        for target in re.findall(r"\]\(([^)#\s]+)\)", _read(os.path.relpath(path, ROOT))):
            if "://" not in target:
                assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)
