"""Per-class averages of attention weights, how class-specific a block is, and attention parity.

Definitions (also written into the JSON report):
  * class mean m[k, c]: the mean of channel c's weight over the images of class k;
  * all-class average a[c]: the mean of m[k, c] over the classes with images, each class weighted equally
    (the seed's "average weights across 1K classes"; on a balanced set it is the plain image mean);
  * class spread of a block: mean over channels c of the standard deviation (ddof 0) of m[k, c] across
    classes k. 0 means every class gets the same weights; the seed's claim is that ECA's spread grows
    more than SE's in stages 4 and 5.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

SPREAD_DEFINITION = ("mean over channels of the standard deviation (ddof 0) across classes of the per-class "
                     "mean weight, over all classes with images")


def class_spread(class_means: np.ndarray) -> float:
    """``class_means`` (K, C) -> mean over channels of the std across the K classes; 0.0 for one class."""
    class_means = np.asarray(class_means, dtype=np.float64)
    if class_means.shape[0] < 2:
        return 0.0
    return float(np.mean(np.std(class_means, axis=0)))


@dataclass
class ClassMeans:
    """Per-class mean weights of every block, over the classes that had images."""

    class_ids: np.ndarray                 # (K,) sorted class indices with at least one image
    counts: np.ndarray                    # (K,) images per class
    means: Dict[str, np.ndarray]          # block name -> (K, C)

    def row(self, class_id: int) -> int:
        hits = np.flatnonzero(self.class_ids == class_id)
        if not len(hits):
            raise KeyError(class_id)
        return int(hits[0])

    def class_mean(self, block: str, class_id: int) -> np.ndarray:
        return self.means[block][self.row(class_id)]

    def all_class_mean(self, block: str) -> np.ndarray:
        return self.means[block].mean(axis=0)

    def spread(self, block: str) -> float:
        return class_spread(self.means[block])

    def count(self, class_id: int) -> int:
        return int(self.counts[self.row(class_id)])


class ClassMeanAccumulator:
    """Running per-class sums, so any number of images is averaged in constant memory."""

    def __init__(self, blocks: Sequence[str]):
        self.blocks = list(blocks)
        self._sums: Dict[int, Dict[str, np.ndarray]] = {}
        self._counts: Dict[int, int] = {}

    def update(self, weights: Dict[str, np.ndarray], labels: Sequence[int]) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        for class_id in np.unique(labels):
            rows = labels == class_id
            sums = self._sums.setdefault(int(class_id), {})
            for block in self.blocks:
                total = np.asarray(weights[block], dtype=np.float64)[rows].sum(axis=0)
                sums[block] = sums[block] + total if block in sums else total
            self._counts[int(class_id)] = self._counts.get(int(class_id), 0) + int(rows.sum())

    def result(self) -> ClassMeans:
        class_ids = np.array(sorted(self._counts), dtype=np.int64)
        counts = np.array([self._counts[k] for k in class_ids], dtype=np.int64)
        means = {block: np.stack([self._sums[k][block] / self._counts[k] for k in class_ids])
                 for block in self.blocks} if len(class_ids) else {}
        return ClassMeans(class_ids, counts, means)


# -- parity: the same images through PyTorch and a deployed model -----------------------------------------

@dataclass
class BlockParity:
    name: str
    label: str
    channels: int
    max_abs_diff: float
    mean_abs_diff: float
    num_images: int

    def to_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


@dataclass
class AttentionParity:
    """Per-block differences of the deployed model's weights from PyTorch's, worst block first."""

    deployed: str
    precision: str
    blocks: List[BlockParity] = field(default_factory=list)
    logits: Optional[Dict[str, object]] = None   # deploy.compare.LogitComparison.to_dict() of the same images
    providers: List[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((b.max_abs_diff for b in self.blocks), default=0.0)

    def to_dict(self) -> Dict[str, object]:
        return {
            "deployed": self.deployed,
            "precision": self.precision,
            "providers": self.providers,
            "ranking": "worst first by mean absolute difference",
            "max_abs_diff": self.max_abs_diff,
            "blocks": [dict(b.to_dict(), rank=i + 1) for i, b in enumerate(self.blocks)],
            "logits": self.logits,
        }


class ParityAccumulator:
    """Max and mean absolute difference per block over all images and channels."""

    def __init__(self, blocks):
        self.blocks = list(blocks)  # AttentionBlock-like: .name, .label, .channels
        self._max = {b.name: 0.0 for b in self.blocks}
        self._sum = {b.name: 0.0 for b in self.blocks}
        self._elements = {b.name: 0 for b in self.blocks}
        self._images = 0

    def update(self, reference: Dict[str, np.ndarray], candidate: Dict[str, np.ndarray]) -> None:
        for block in self.blocks:
            ref = np.asarray(reference[block.name], dtype=np.float64)
            cand = np.asarray(candidate[block.name], dtype=np.float64).reshape(ref.shape)
            diff = np.abs(ref - cand)
            if diff.size:
                self._max[block.name] = max(self._max[block.name], float(diff.max()))
                self._sum[block.name] += float(diff.sum())
                self._elements[block.name] += diff.size
        self._images += len(next(iter(reference.values()))) if reference else 0

    def rows(self) -> List[BlockParity]:
        rows = [BlockParity(b.name, b.label, b.channels, self._max[b.name],
                            self._sum[b.name] / max(self._elements[b.name], 1), self._images)
                for b in self.blocks]
        return sorted(rows, key=lambda r: (-r.mean_abs_diff, -r.max_abs_diff))
