"""Comparing classifier outputs: error statistics and top-k agreement, as result objects.

Reduced precision is judged by what matters to a classifier (top-k agreement, cosine similarity, an error
relative to the logit range) rather than by an absolute 1e-5 tolerance that FP16 and INT8 can never meet.
"""
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import CheckFailedError

# How many image names a non-finite refusal lists before it says "and N more".
NONFINITE_EXAMPLES = 5


@dataclass
class LogitComparison:
    batch_size: int
    max_abs_error: float
    mean_abs_error: float
    cosine_similarity: float
    top1_agreement: float
    top5_agreement: float
    tolerance: Optional[float] = None

    def __bool__(self) -> bool:
        return self.tolerance is None or self.max_abs_error <= self.tolerance

    @property
    def passed(self) -> bool:
        return bool(self)

    def to_dict(self) -> Dict[str, object]:
        result = asdict(self)
        result["passed"] = self.passed
        return result


def topk_indices(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[-1])
    # argsort of the negated logits is stable, so ties resolve to the lower class index in every backend.
    return np.argsort(-logits, axis=-1, kind="stable")[..., :k]


def topk_agreement(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Share of rows whose top-k class sets are equal (k=1: the same predicted class)."""
    ref = np.sort(topk_indices(reference, k), axis=-1)
    cand = np.sort(topk_indices(candidate, k), axis=-1)
    return float(np.mean(np.all(ref == cand, axis=-1)))


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over rows; rows are compared as vectors, so a uniform scale error does not hide."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    dots = np.sum(ref * cand, axis=1)
    return float(np.mean(np.where(norms > 0, dots / np.maximum(norms, 1e-30), 1.0)))


def compare_logits(reference: np.ndarray, candidate: np.ndarray, atol: Optional[float] = None,
                   rtol: float = 0.0) -> LogitComparison:
    """Statistics of ``candidate`` against ``reference``; with ``atol`` the result also passes or fails.

    The tolerance is ``atol + rtol * max|reference|``, i.e. relative to the logit range.
    """
    reference = np.asarray(reference, dtype=np.float32)
    candidate = np.asarray(candidate, dtype=np.float32)
    if reference.shape != candidate.shape:
        raise ValueError("shapes differ: {} vs {}".format(reference.shape, candidate.shape))
    error = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    tolerance = None if atol is None else float(atol + rtol * np.max(np.abs(reference)))
    return LogitComparison(
        batch_size=int(reference.shape[0]),
        max_abs_error=float(error.max()) if error.size else 0.0,
        mean_abs_error=float(error.mean()) if error.size else 0.0,
        cosine_similarity=cosine_similarity(reference, candidate),
        top1_agreement=topk_agreement(reference, candidate, 1),
        top5_agreement=topk_agreement(reference, candidate, 5),
        tolerance=tolerance,
    )


# -- outputs that are no result ---------------------------------------------------------------------------------

def nonfinite_rows(values: np.ndarray) -> np.ndarray:
    """Indices of the rows (images) of ``values`` (N, ...) that hold a NaN or an infinity anywhere."""
    values = np.asarray(values)
    if values.dtype.kind not in "fc" or values.size == 0:
        return np.zeros(0, dtype=np.int64)
    bad = ~np.isfinite(values.reshape(len(values), -1))
    return np.flatnonzero(bad.any(axis=1))


def describe_images(indices: Sequence[int], names: Optional[Sequence[str]] = None, total: Optional[int] = None) -> str:
    """"3 of 8 images (a.png, b.png, c.png)": which images, by name where known, else by position (from 1)."""
    indices = [int(i) for i in indices]
    shown: List[str] = [str(names[i]) if names is not None and i < len(names) else "#{}".format(i + 1)
                        for i in indices[:NONFINITE_EXAMPLES]]
    if len(indices) > NONFINITE_EXAMPLES:
        shown.append("and {} more".format(len(indices) - NONFINITE_EXAMPLES))
    count = "{} of {} images".format(len(indices), total) if total is not None else "{} image(s)".format(
        len(indices))
    return "{} ({})".format(count, ", ".join(shown))


def check_finite_outputs(values: np.ndarray, what: str, names: Optional[Sequence[str]] = None,
                         total: Optional[int] = None, hint: str = "") -> None:
    """CheckFailedError (exit 1) naming the images for which ``what`` (e.g. "m.onnx's logits") holds NaN or an
    infinity: such numbers are no result, so no command prints them as one (a NaN softmax is "nan%" for every
    class, a NaN error compares as 0 and looks perfect)."""
    rows = nonfinite_rows(values)
    if len(rows):
        raise CheckFailedError("{} hold NaN or infinite values for {}{}".format(
            what, describe_images(rows, names, len(values) if total is None else total),
            "; " + hint if hint else ""))
