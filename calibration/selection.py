"""Choosing the calibration method by measurement: hold out part of the calibration images, derive every
candidate's ranges from one pass of statistics, and score each candidate's Q/DQ model on the held-out images.

The score is top-1 agreement with the FP32 model (higher wins), then the mean KL divergence of the softmax from
FP32's (lower wins), then the order of CANDIDATES (so a tie is settled the same way on every run). Agreement is
compared to the resolution of the held-out images: candidates within one image of the best agreement count as
tied, and KL decides among them. One image out of ~100 is noise, not evidence: on a digits ECA-MobileNetV2,
percentile 99.9 led the TensorRT target's hold-out by one image with the worst KL of all, and on 593 unseen
digits agreed 95.78% where the least-KL candidate within that image agreed 96.63%. Across candidates, held-out
KL ranked them in the same direction as KL on unseen digits (Spearman 0.43 to 0.94 on three models, both
targets). The held-out images never feed the ranges: they only judge them.

The Q/DQ models run in ONNX Runtime with its default optimizations, i.e. the CPU target through ORT's QLinear
kernels, as it will run, and the TensorRT target with ORT's reference Q/DQ arithmetic (symmetric int8), the
closest the CPU gets to TensorRT's explicit quantization.
"""
import hashlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deploy.errors import UserError

from .ranges import DEFAULT_PERCENTILE

AUTO = "auto"
HOLDOUT_SHARE = 0.2     # of the calibration images, held out to judge the candidates
MIN_HOLDOUT = 64        # fewer held-out images than this make agreement too coarse (1 image = 1.6 pt at 64)
MIN_AUTO_IMAGES = 4     # below this there is nothing to split
EVAL_BATCH = 64


@dataclass(frozen=True)
class Candidate:
    """One way to pick the ranges: a method of calibration.ranges, and its percentile when it has one."""

    method: str
    percentile: Optional[float] = None

    @property
    def name(self) -> str:
        return "percentile {:g}".format(self.percentile) if self.method == "percentile" else self.method

    @property
    def range_percentile(self) -> float:
        return self.percentile if self.percentile is not None else DEFAULT_PERCENTILE


# What `--method auto` tries, in the order that settles ties.
CANDIDATES = (
    Candidate("entropy"),
    Candidate("minmax"),
    Candidate("percentile", 99.9),
    Candidate("percentile", 99.99),
    Candidate("percentile", 99.999),
    Candidate("mse"),
)


@dataclass
class Score:
    """How a quantized model does on the held-out images, against FP32 (and the labels, when known)."""

    agreement: float                  # % of images whose top-1 class matches FP32's
    kl: float                         # mean KL(FP32 softmax || quantized softmax), nats
    top1: Optional[float] = None      # % correct, with labels
    fp32_top1: Optional[float] = None

    @property
    def top1_drop(self) -> Optional[float]:
        return None if self.top1 is None else self.fp32_top1 - self.top1

    def key(self) -> Tuple[float, float]:
        """Sorts best first: more agreement, then less divergence."""
        return (-round(self.agreement, 9), round(self.kl, 12))

    def to_dict(self) -> Dict[str, object]:
        payload = {"agreement": round(self.agreement, 4), "kl": float("{:.6g}".format(self.kl))}
        if self.top1 is not None:
            payload.update(top1=round(self.top1, 4), fp32_top1=round(self.fp32_top1, 4),
                           top1_drop=round(self.top1_drop, 4))
        return payload


def best_candidate(scores: Sequence[Score], images: int) -> int:
    """Index of the best of ``scores`` (measured on ``images`` held-out images): among those within one image
    of the highest agreement, the least KL; then the earliest."""
    if not scores:
        raise ValueError("no scores")
    # Counted in images, so agreements rounded for a report compare the same as the exact ones.
    missed = [int(round((100.0 - score.agreement) * images / 100.0)) for score in scores]
    tied = [index for index, count in enumerate(missed) if count <= min(missed) + 1]
    return min(tied, key=lambda index: (round(scores[index].kl, 12), index))


@dataclass
class Split:
    calibration: np.ndarray  # indices that feed the ranges
    holdout: np.ndarray      # indices that only judge them
    note: Optional[str] = None


def holdout_split(count: int, seed: int = 0, labels: Optional[np.ndarray] = None) -> Split:
    """Indices of the calibration and held-out images: HOLDOUT_SHARE, at least MIN_HOLDOUT, class-balanced.

    With fewer than 2 * MIN_HOLDOUT images, half are held out (and the note says so); below MIN_AUTO_IMAGES
    there is nothing to split and a UserError says what to do.
    """
    if count < MIN_AUTO_IMAGES:
        raise UserError("choosing the calibration method needs at least {} images, got {}; give more images or "
                        "an explicit --method".format(MIN_AUTO_IMAGES, count))
    note = None
    if count >= 2 * MIN_HOLDOUT:
        size = max(MIN_HOLDOUT, int(round(count * HOLDOUT_SHARE)))
    else:
        size = count // 2
        note = ("only {} calibration images: {} held out to judge the calibration (at least {} are advised, "
                "so use --num-images {} or more); the ranges come from the other {}".format(
                    count, size, MIN_HOLDOUT, 2 * MIN_HOLDOUT, count - size))
    order = np.random.RandomState(seed).permutation(count)
    if labels is not None and len(labels) == count:
        # Interleave the classes in the shuffled order, so the first `size` cover every class evenly.
        rank_in_class = np.empty(count, dtype=np.int64)
        seen: Dict[int, int] = {}
        for position, index in enumerate(order):
            label = int(labels[index])
            rank_in_class[position] = seen.get(label, 0)
            seen[label] = rank_in_class[position] + 1
        order = order[np.lexsort((np.arange(count), rank_in_class))]
    holdout = np.sort(order[:size])
    calibration = np.sort(order[size:])
    return Split(calibration=calibration, holdout=holdout, note=note)


def _session(model, optimize: bool = True, source: str = "the model"):
    import onnxruntime as ort
    from deploy.runners.onnxruntime import create_session  # ORT's own errors as one line naming ``source``
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return create_session(model.SerializeToString(), options, name=source)


def run_logits(model, images: np.ndarray, optimize: bool = True, source: str = "the model") -> np.ndarray:
    """Logits of ``model`` (onnx.ModelProto) on ``images``, in ORT on the CPU; fixed-batch models are padded.
    ``optimize=False`` runs every node as written (no fusion, no constant folding): the same arithmetic in
    another order of float operations, which shows how far a Q/DQ model's answers move with the kernels alone."""
    from deploy.runners.execution import pad_batch
    from deploy.runners.onnxruntime import run_session
    from deploy.validate import MAX_BATCH
    from .ranges import fixed_batch_of
    fixed = fixed_batch_of(model)
    if fixed and fixed > MAX_BATCH:  # every call would pad the images to this many (deploy's fixed-batch rule)
        raise UserError("{}: its batch is fixed at {} images, above the limit of {}; export the model with a smaller "
                        "or a dynamic batch".format(source, fixed, MAX_BATCH))
    session = _session(model, optimize, source)
    name = session.get_inputs()[0].name
    step = fixed or EVAL_BATCH
    outputs = []
    for start in range(0, len(images), step):
        batch = images[start:start + step]
        real = len(batch)
        if fixed and real < fixed:  # the one padding rule; the padded rows' logits are dropped
            batch = pad_batch(batch, fixed)
        outputs.append(run_session(session, None, {name: batch}, source)[0][:real])
    return np.concatenate(outputs).astype(np.float64)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class HeldOut:
    """The held-out images and FP32's answers on them; scores quantized models against those answers."""

    def __init__(self, fp32_model, images: np.ndarray, labels: Optional[np.ndarray] = None,
                 source: str = "the FP32 model"):
        self.images = np.ascontiguousarray(images, dtype=np.float32)
        self.labels = labels
        self.reference = _log_softmax(run_logits(fp32_model, self.images, source=source))
        self.reference_top1 = self.reference.argmax(axis=1)
        self.fp32_top1 = None if labels is None else 100.0 * float(np.mean(self.reference_top1 == labels))

    def __len__(self) -> int:
        return len(self.images)

    def score(self, model) -> Score:
        return self.score_logits(run_logits(model, self.images))

    def score_logits(self, logits: np.ndarray) -> Score:
        """The Score of a model's ``logits`` on these images (for callers that already ran it)."""
        log_q = _log_softmax(logits)
        top1 = log_q.argmax(axis=1)
        agreement = 100.0 * float(np.mean(top1 == self.reference_top1))
        kl = float(np.mean((np.exp(self.reference) * (self.reference - log_q)).sum(axis=1)))
        accuracy = None if self.labels is None else 100.0 * float(np.mean(top1 == self.labels))
        return Score(agreement=agreement, kl=max(kl, 0.0), top1=accuracy, fp32_top1=self.fp32_top1)


@dataclass
class CandidateResult:
    candidate: Candidate
    score: Score
    same_as: Optional[str] = None   # a candidate earlier in the order whose ranges are identical

    def to_dict(self) -> Dict[str, object]:
        payload = {"method": self.candidate.name}
        payload.update(self.score.to_dict())
        if self.same_as:
            payload["same_as"] = self.same_as
        return payload


def ranges_fingerprint(ranges) -> str:
    """Identical ranges give identical Q/DQ models: such candidates are scored once."""
    amax = np.array([r.amax for r in ranges.tensors.values()], dtype=np.float64)
    return hashlib.sha256(amax.tobytes()).hexdigest()


def score_candidates(model, ranges_by_candidate, target: str, heldout: HeldOut, progress: bool = False):
    """[CandidateResult] in CANDIDATES order, and the best one's (Score, Candidate, onnx.ModelProto,
    QuantizedModel) by best_candidate."""
    from deploy.progress import progress_bar
    from precision.qdq import build_quantized
    results: List[CandidateResult] = []
    built = {}
    kept = None   # the model of the best by Score.key: usually the chosen one, so it is rarely built twice
    items = list(ranges_by_candidate.items())
    with progress_bar(len(items), desc="scoring " + target, unit="method", enabled=progress) as bar:
        for candidate, ranges in items:
            bar.update(1)
            fingerprint = ranges_fingerprint(ranges)
            if fingerprint in built:
                first, score = built[fingerprint]
                results.append(CandidateResult(candidate, score, same_as=first.name))
                continue
            quantized, summary = build_quantized(model, ranges, target, check=False)  # the chosen one is checked
            score = heldout.score(quantized)
            built[fingerprint] = (candidate, score)
            results.append(CandidateResult(candidate, score))
            if kept is None or score.key() < kept[0].key():
                kept = (score, candidate, quantized, summary)
    scored = [result for result in results if result.same_as is None]
    chosen = scored[best_candidate([result.score for result in scored], len(heldout))]
    if chosen.candidate != kept[1]:  # only one candidate's model is held at a time (ResNet-50's is ~100 MB)
        quantized, summary = build_quantized(model, ranges_by_candidate[chosen.candidate], target, check=False)
        kept = (chosen.score, chosen.candidate, quantized, summary)
    return results, kept


def format_table(target: str, results: Sequence[CandidateResult], chosen: Candidate, judged: str) -> List[str]:
    """The candidates as text lines, the chosen one marked; ``judged`` says on which images (api.judged_on)."""
    lines = ["{} target, scored {} (within one image of the best agreement, the least KL wins):".format(
                 target, judged),
             "  {:<18} {:>10} {:>12}".format("method", "agreement", "mean KL")]
    for result in results:
        mark = "  <- chosen" if result.candidate == chosen else (
            "  (= {})".format(result.same_as) if result.same_as else "")
        lines.append("  {:<18} {:>9.2f}% {:>12.3g}{}".format(
            result.candidate.name, result.score.agreement, result.score.kl, mark))
    return lines
