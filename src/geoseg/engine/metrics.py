"""Segmentation metrics from one confusion matrix: per-class IoU and F1, macro mIoU, pixel accuracy.

The matrix is summed over batches and all-reduced over ranks, so the metrics of a sharded
evaluation equal those of one process over the same chips. mIoU is the macro mean over the
classes that occur in the labels or the predictions, so a rare class weighs as much as a common one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from geoseg.engine.distributed import DistInfo, all_reduce_sum


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``; ``ignore_index`` is skipped."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted and true class maps of the same shape."""
        pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
        keep = (target >= 0) & (target < self.num_classes)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        n = self.num_classes
        self.matrix += torch.bincount(target[keep] * n + pred[keep], minlength=n * n).reshape(n, n)

    def all_reduce(self, info: DistInfo) -> ConfusionMatrix:
        all_reduce_sum(self.matrix, info)
        return self

    def reset(self) -> None:
        self.matrix.zero_()


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def compute_metrics(matrix: torch.Tensor, class_names: Sequence[str]) -> dict[str, object]:
    """Per-class IoU/F1 (NaN for a class absent from labels and predictions), their macro means, accuracy."""
    m = matrix.double().cpu()
    tp = m.diag()
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    iou = [_ratio(t, t + p + n) for t, p, n in zip(tp.tolist(), fp.tolist(), fn.tolist(), strict=True)]
    f1 = [_ratio(2 * t, 2 * t + p + n) for t, p, n in zip(tp.tolist(), fp.tolist(), fn.tolist(), strict=True)]
    present = [v for v in iou if not math.isnan(v)]
    present_f1 = [v for v in f1 if not math.isnan(v)]
    return {
        "miou": sum(present) / len(present) if present else math.nan,
        "mf1": sum(present_f1) / len(present_f1) if present_f1 else math.nan,
        "accuracy": _ratio(float(tp.sum()), float(m.sum())),
        "iou": dict(zip(class_names, iou, strict=True)),
        "f1": dict(zip(class_names, f1, strict=True)),
        "pixels": int(m.sum()),
    }


def majority_baseline(matrix: torch.Tensor, class_names: Sequence[str]) -> dict[str, object]:
    """The metrics of predicting the most frequent true class everywhere, from the same confusion matrix."""
    truth = matrix.sum(1)
    n = len(truth)
    baseline = torch.zeros_like(matrix)
    baseline[:, int(truth.argmax())] = truth
    return compute_metrics(baseline.reshape(n, n), class_names)
