"""Which classes the figure shows: ``--classes`` by folder name, ImageNet name or index; else the first four."""
import difflib
import os
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

import deploy
from deploy.errors import UserError
from deploy.text import is_ascii_number

DEFAULT_COUNT = 4  # the seed shows four classes
_TSV = os.path.join(os.path.dirname(os.path.abspath(deploy.__file__)), "data", "imagenet_classes.tsv")


@dataclass(frozen=True)
class ClassChoice:
    index: int
    name: str      # the folder name (an ImageNet synset, "7", ...) or the index as text
    display: str   # the legend's text: a synset's first ImageNet name, "class 7" for a bare number, else name
    count: int = 0

    def with_count(self, count: int) -> "ClassChoice":
        return replace(self, count=int(count))

    def to_dict(self) -> Dict[str, object]:
        return {"index": self.index, "name": self.name, "display": self.display, "num_images": self.count}


def imagenet_names() -> Dict[str, List[str]]:
    """{synset: [names]} from deploy/data/imagenet_classes.tsv."""
    names = {}
    with open(_TSV, "r", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                synset, _, text = line.rstrip("\n").partition("\t")
                names[synset] = [part.strip() for part in text.split(",") if part.strip()]
    return names


def choose_classes(spec: Optional[str], class_names: Optional[Sequence[str]], labels: Sequence[int],
                   count: int = DEFAULT_COUNT) -> List[ClassChoice]:
    """Resolve ``--classes a,b,c`` (folder names, ImageNet names or indices); default: the first ``count``."""
    present = sorted(set(int(label) for label in labels))
    synsets = _synset_names(class_names)
    if not spec:
        return _unique_display([_choice(index, class_names, synsets) for index in present[:count]])
    chosen: List[int] = []
    for token in (part.strip() for part in spec.split(",")):
        if token:
            index = _resolve(token, class_names, synsets)
            if index not in chosen:
                chosen.append(index)
    if not chosen:
        raise UserError("--classes names no class")
    return _unique_display([_choice(index, class_names, synsets) for index in chosen])


def _unique_display(choices: List[ClassChoice]) -> List[ClassChoice]:
    """ImageNet has two classes called "crane" (and two "maillot"): add the folder name where texts collide."""
    texts = [c.display for c in choices]
    return [replace(c, display="{} ({})".format(c.display, c.name)) if texts.count(c.display) > 1 else c
            for c in choices]


def _synset_names(class_names) -> Dict[str, List[str]]:
    if not class_names or not all(name.startswith("n") and is_ascii_number(name[1:]) for name in class_names):
        return {}
    table = imagenet_names()
    return {name: table.get(name, []) for name in class_names}


def _choice(index: int, class_names, synsets) -> ClassChoice:
    name = class_names[index] if class_names and index < len(class_names) else str(index)
    if synsets.get(name):
        display = synsets[name][0]
    else:  # a bare number in a legend reads as a value, not a class
        display = "class " + name if is_ascii_number(name) else name
    return ClassChoice(index, name, display)


def _resolve(token: str, class_names, synsets) -> int:
    if token.lower().startswith("class ") and is_ascii_number(token[6:].strip()):  # the legend's own text
        token = token[6:].strip()
    if class_names and token in class_names:
        return list(class_names).index(token)
    lowered = token.lower()
    for synset, names in synsets.items():
        if any(lowered == name.lower() for name in names):
            return list(class_names).index(synset)
    if is_ascii_number(token):
        index = int(token)
        if class_names and index >= len(class_names):
            raise UserError("class index {} is out of range: the data has {} classes".format(index, len(class_names)))
        return index
    candidates = list(class_names or []) + [n for names in synsets.values() for n in names]
    close = difflib.get_close_matches(token, candidates, n=3)
    hint = " (did you mean {}?)".format(", ".join(close)) if close else ""
    raise UserError("unknown class {!r}{}; give class folder names or indices".format(token, hint))
