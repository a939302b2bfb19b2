"""The shape of the JSON files the project writes and later reads back (engine and model sidecars, the bundle
manifest, the pipeline's state): checked on load, so a damaged or hand-edited file is one line naming the file
and the field, never a KeyError or AttributeError further on.

A schema is plain data:
  * a type or a tuple of types: the value's type (``bool`` is not an ``int`` here, ``int`` is a ``float``);
  * a dict: an object with these fields; a name ending in ``?`` may be absent; other fields are allowed;
  * a one-item list ``[item]``: a list whose entries match ``item``;
  * ``MapOf(item)``: an object whose every value matches ``item`` (names chosen by the writer).
Stdlib only and Python 3.8, like the rest of deploy/.
"""
import json
import os
from typing import Any, List, Optional

from .errors import UserError
from .filekind import file_kind, is_regular_file

# The largest JSON file the tool reads back (sidecars, manifests, the pipeline's state are a few KB; a bundle
# manifest of 10,000 files is about 1 MB): parsed, 16 MiB of JSON stays under a few hundred MB of memory.
MAX_JSON_BYTES = 16 << 20

_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
          bool: "true or false", type(None): "null"}


class MapOf:
    """An object whose values all match ``item``."""

    def __init__(self, item):
        self.item = item


def _describe(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(_NAMES.get(kind, kind.__name__) for kind in kinds)


def _is(value, kinds) -> bool:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


def check_schema(value: Any, schema, source: str, field: str = "") -> None:
    """UserError "<source>: field <field> ..." at the first place ``value`` does not match ``schema``."""
    where = "{}: field {}".format(source, field) if field else source
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise UserError("{} must be an object, got {}".format(where, _describe(type(value))))
        for name, item in schema.items():
            optional = name.endswith("?")
            key = name[:-1] if optional else name
            path = "{}.{}".format(field, key) if field else key
            if key not in value:
                if not optional:
                    raise UserError("{}: field {} is missing".format(source, path))
                continue
            check_schema(value[key], item, source, path)
    elif isinstance(schema, MapOf):
        check_schema(value, dict, source, field)
        for key, item in value.items():
            check_schema(item, schema.item, source, "{}.{}".format(field, key) if field else str(key))
    elif isinstance(schema, list):
        check_schema(value, list, source, field)
        for index, item in enumerate(value):
            check_schema(item, schema[0], source, "{}[{}]".format(field, index))
    elif not _is(value, schema):
        raise UserError("{} must be {}, got {}".format(where, _describe(schema), _describe(type(value))))


def load_checked_json(path, schema, what: str = "file") -> Any:
    """The JSON object at ``path``, checked against ``schema``; UserError (one line) when it cannot be read,
    is not JSON, or does not match."""
    path = os.fspath(path)
    if not is_regular_file(path):
        raise UserError("cannot read {} {}: it is {}".format(what, path, file_kind(path)))
    try:
        size = os.path.getsize(path)
        if size > MAX_JSON_BYTES:  # checked before reading: Python's objects take ~10x the text
            raise UserError("cannot read {} {}: it is {:.1f} MB, and no {} this tool writes is above {} MB; it is "
                            "damaged or another file".format(what, path, size / 1e6, what, MAX_JSON_BYTES >> 20))
        with open(path, "r", encoding="utf-8") as handle:
            value = json.load(handle)
    # UnicodeDecodeError and JSONDecodeError are ValueErrors; a file of 100000 nested brackets is a RecursionError
    except (OSError, ValueError, RecursionError) as exc:
        raise UserError("cannot read {} {}: {}".format(what, path, str(exc).splitlines()[0][:200]
                                                        if str(exc) else type(exc).__name__)) from None
    check_schema(value, schema, path)
    return value


# -- strict JSON out ---------------------------------------------------------------------------------------------

def finite_for_json(value, path: str = "", nulled: Optional[List[str]] = None):
    """``value`` with every NaN or infinite number (Python or numpy) replaced by None, so ``json.dumps(...,
    allow_nan=False)`` writes strict JSON (``Infinity`` and ``NaN`` are not JSON; most parsers refuse them);
    the dotted paths of the replaced fields are appended to ``nulled``."""
    import math
    nulled = [] if nulled is None else nulled
    if isinstance(value, dict):
        return {key: finite_for_json(item, "{}.{}".format(path, key) if path else str(key), nulled)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_for_json(item, "{}[{}]".format(path, index), nulled) for index, item in enumerate(value)]
    if isinstance(value, bool) or value is None:
        return value
    kind = type(value).__module__
    if isinstance(value, float) or (kind == "numpy" and hasattr(value, "dtype") and value.dtype.kind == "f"):
        number = float(value)
        if not math.isfinite(number):
            nulled.append(path or "value")
            return None
        return number
    if kind == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iu":
        return int(value)
    return value


def dumps_strict(value, note=None, **kwargs) -> str:
    """json.dumps of ``value`` as strict JSON: non-finite numbers become null, and ``note`` (a callable taking
    one line) hears which fields, so a null is never a silent stand-in for a number."""
    nulled: List[str] = []
    text = json.dumps(finite_for_json(value, nulled=nulled), allow_nan=False, **kwargs)
    if nulled and note is not None:
        note("{} field(s) were NaN or infinite and are written as null: {}".format(
            len(nulled), ", ".join(nulled[:5]) + (", ..." if len(nulled) > 5 else "")))
    return text
