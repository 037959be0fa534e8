"""Losses for the ``loss`` config group: cross-entropy, Dice and their weighted sum.

Each takes raw logits (N, C, H, W) and class indices (N, H, W) in any integer dtype, skips
``ignore_index`` and computes in float32 even under autocast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss as SmpDiceLoss
from torch import nn

from geoseg.config import is_real
from geoseg.errors import GeosegError


def check_loss_options(class_weights: Sequence[float] | None, label_smoothing: float) -> None:
    """``loss.label_smoothing`` in [0, 1]; ``loss.class_weights`` finite, >= 0 and not all 0 (a negative
    weight rewards the wrong class; all 0 makes the loss 0/0)."""
    if not is_real(label_smoothing) or not 0 <= label_smoothing <= 1:
        raise GeosegError(f"loss.label_smoothing={label_smoothing!r} must be a number in [0, 1], e.g. 0.1")
    if not class_weights:
        return
    weights = list(class_weights)
    if not all(is_real(w) and w >= 0 for w in weights) or not any(weights):
        raise GeosegError(
            f"loss.class_weights={weights} must be numbers >= 0, not all 0, one per entry of data.classes"
        )


def check_ignore_index(loss_cfg: Any, data_ignore: int, where: str = "loss") -> None:
    """Every ``ignore_index`` in the loss config must be ``data.ignore_index``, the value the masks hold
    for ignored pixels: another value trains them as a class (torch: "Target 255 is out of bounds")."""
    if isinstance(loss_cfg, Mapping):
        value = loss_cfg.get("ignore_index", data_ignore)
        if value != data_ignore or isinstance(value, bool):
            raise GeosegError(
                f"{where}.ignore_index={value!r} differs from data.ignore_index={data_ignore}, the value the "
                "masks mark ignored pixels with; drop the override (loss configs follow data.ignore_index)"
            )
        for key, sub in loss_cfg.items():
            check_ignore_index(sub, data_ignore, f"{where}.{key}")
    elif isinstance(loss_cfg, list | tuple):
        for i, sub in enumerate(loss_cfg):
            check_ignore_index(sub, data_ignore, f"{where}.{i}")


class CrossEntropy(nn.Module):
    """Cross-entropy with optional per-class weights (listed in ``data.classes`` order)."""

    def __init__(
        self,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        check_loss_options(class_weights, label_smoothing)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        weight = torch.as_tensor(list(class_weights), dtype=torch.float32) if class_weights else None
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and len(self.weight) != logits.shape[1]:
            raise GeosegError(
                f"loss.class_weights has {len(self.weight)} values but the model predicts "
                f"{logits.shape[1]} classes; give one weight per entry of data.classes"
            )
        return F.cross_entropy(
            logits.float(), target.long(), weight=self.weight, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )  # fmt: skip


class Dice(nn.Module):
    """Soft multiclass Dice (smp's ``DiceLoss``): ``1 - dice`` per class, averaged over all classes.

    A class absent from the batch's labels contributes 0 (smp masks it), so the loss of a batch with
    few classes is scaled down by the share of classes present.
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 0.0) -> None:
        super().__init__()
        self.dice = SmpDiceLoss("multiclass", from_logits=True, smooth=smooth, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.dice(logits.float(), target.long())


class WeightedSum(nn.Module):
    """``sum(w_i * loss_i)``, e.g. cross-entropy + Dice."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(losses) != len(weights):
            raise GeosegError(
                f"loss.weights has {len(weights)} value(s) for {len(losses)} loss.losses; one weight per loss"
            )
        self.losses = nn.ModuleList(losses)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True))
