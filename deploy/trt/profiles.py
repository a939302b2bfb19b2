"""Batch ranges and TensorRT optimization profiles, and the run-time shape check that names the remedy.

Only the batch axis may be dynamic (the exported models are NCHW at a fixed image size). TensorRT's own message
for an out-of-range shape ("... exceeds min ~ max range") names neither the option nor the remedy, so
``check_input_shape`` says both before TensorRT is asked.
"""
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import UserError
from ..runners.execution import DEFAULT_MAX_BATCH
from ..validate import MAX_BATCH, check_bound



def is_dynamic(dim) -> bool:
    return dim is None or isinstance(dim, str) or int(dim) < 0


def format_shape(shape: Sequence) -> str:
    return "x".join("?" if is_dynamic(dim) else str(int(dim)) for dim in shape)


class BatchRange(NamedTuple):
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class ShapeProfile:
    """One input's (min, opt, max) shapes in an optimization profile."""

    input_name: str
    min: Tuple[int, ...]
    opt: Tuple[int, ...]
    max: Tuple[int, ...]

    def to_dict(self) -> Dict[str, object]:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def resolve_batch_range(min_batch: Optional[int] = None, opt_batch: Optional[int] = None,
                        max_batch: Optional[int] = None) -> BatchRange:
    """Fill what was not given: min 1, opt = min (latency first, as on a Jetson stream), max 8 or the largest given."""
    for flag, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
        check_bound(flag, value, MAX_BATCH)
    low = int(min_batch) if min_batch is not None else 1
    given = [int(v) for v in (min_batch, opt_batch, max_batch) if v is not None]
    high = int(max_batch) if max_batch is not None else max([DEFAULT_MAX_BATCH] + given)
    opt = int(opt_batch) if opt_batch is not None else low
    if not low <= opt <= high:
        raise UserError("batch sizes must satisfy --min-batch ({}) <= --opt-batch ({}) <= --max-batch ({})".format(
            low, opt, high))
    return BatchRange(low, opt, high)


def resolve_profiles(input_shapes: Dict[str, Sequence], min_batch=None, opt_batch=None,
                     max_batch=None) -> List[ShapeProfile]:
    """The optimization profile for a model's inputs; empty when every input is static."""
    profiles = []
    for name, shape in input_shapes.items():
        if not shape:
            raise UserError("input {!r} is a scalar; expected an NCHW image batch".format(name))
        if any(is_dynamic(dim) for dim in shape[1:]):
            raise UserError("input {!r} has dynamic axes beyond the batch ({}); re-export it with a fixed image "
                            "size".format(name, format_shape(shape)))
        rest = tuple(int(dim) for dim in shape[1:])
        if is_dynamic(shape[0]):
            batch = resolve_batch_range(min_batch, opt_batch, max_batch)
            profiles.append(ShapeProfile(name, (batch.min,) + rest, (batch.opt,) + rest, (batch.max,) + rest))
            continue
        wrong = ["{} {}".format(flag, value) for flag, value in (("--min-batch", min_batch),
                 ("--opt-batch", opt_batch), ("--max-batch", max_batch)) if value is not None and value != shape[0]]
        if wrong:
            raise UserError("input {!r} has a static batch of {}, so {} cannot apply; leave the batch options out, "
                            "or export the model with a dynamic batch (eca-deploy export without --batch)".format(
                                name, shape[0], ", ".join(wrong)))
    return profiles


def check_input_shape(name: str, engine_shape: Sequence[int], shape: Sequence[int],
                      profile: Optional[Tuple[Sequence[int], Sequence[int], Sequence[int]]] = None) -> None:
    """Raise a UserError that names the remedy when ``shape`` cannot run on an engine input."""
    engine_shape, shape = tuple(engine_shape), tuple(int(dim) for dim in shape)
    if len(shape) != len(engine_shape):
        raise UserError("input {!r}: got {} dimensions ({}), the engine takes {} ({})".format(
            name, len(shape), format_shape(shape), len(engine_shape), format_shape(engine_shape)))
    for axis, (expected, got) in enumerate(zip(engine_shape, shape)):
        if is_dynamic(expected):
            low, high = (int(profile[0][axis]), int(profile[2][axis])) if profile else (got, got)
            if not low <= got <= high:
                raise UserError(
                    "input {!r}: {} {} is outside the engine's profile range {}~{} (TensorRT would fail with "
                    "'exceeds min~max range'); use a batch in that range, or rebuild the engine with "
                    "--min-batch/--max-batch covering {}".format(
                        name, "batch" if axis == 0 else "axis {} size".format(axis), got, low, high, got))
        elif int(expected) != got and axis == 0:
            raise UserError("input {!r}: the engine has a static batch of {}, got {}; use --batch {} or rebuild "
                            "from a dynamic-batch ONNX".format(name, expected, got, expected))
        elif int(expected) != got:
            raise UserError("input {!r}: shape {} does not fit the engine's {}".format(
                name, format_shape(shape), format_shape(engine_shape)))
