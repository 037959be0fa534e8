"""``norm=auto``, the default: BatchNorm, or FrozenBatchNorm for a pretrained encoder at a small batch.

BatchNorm trains on batch statistics; at a per-GPU batch of a few chips they are noisy, and they replace
the pretrained running statistics of a fine-tuned encoder. FrozenBatchNorm keeps the pretrained
statistics and γ/β fixed (Detectron's choice for fine-tuning). Measured on the Sen1Floods11 -> Slovenia
transfer (docs/pretrained.md), FrozenBatchNorm beat BatchNorm and GroupNorm on the pretrained encoder at
batch 2, so ``auto`` picks it for a pretrained encoder (``encoder.weights``) at ``small_batch`` chips per
GPU or fewer, and BatchNorm everywhere else. Any other ``norm=`` is taken as chosen.
"""

from __future__ import annotations

import functools
import logging

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from geoseg.models.norms import NormFactory, factory_target

log = logging.getLogger(__name__)


def auto_norm(
    num_channels: int, small_batch: int = 4, eps: float = 1e-5, momentum: float | None = 0.1
) -> nn.Module:
    """``norm=auto`` where neither the weights nor the batch are known: BatchNorm."""
    return nn.BatchNorm2d(num_channels, eps=eps, momentum=momentum)


def is_auto(norm: NormFactory) -> bool:
    return factory_target(norm) is auto_norm


def choose_norm(
    norm: NormFactory, pretrained: bool, batch_size: object, built: str | None = None
) -> NormFactory:
    """The norm ``auto`` stands for: FrozenBatchNorm for a pretrained encoder at ``batch_size`` <=
    ``small_batch``, else BatchNorm; ``built`` (a checkpoint's ``meta["norm"]``) rebuilds its choice.
    Any other factory is returned as it is."""
    if not is_auto(norm):
        return norm
    kwargs = dict(norm.keywords) if isinstance(norm, functools.partial) else {}
    small = kwargs.pop("small_batch", 4)
    small_batch = isinstance(batch_size, int) and isinstance(small, int) and batch_size <= small
    frozen = built == "FrozenBatchNorm2d" if built is not None else pretrained and small_batch
    if built is None and pretrained:
        chosen = "FrozenBatchNorm2d" if frozen else "BatchNorm2d"
        why = f"{batch_size} chips per GPU <= {small}" if frozen else f"{batch_size} chips per GPU > {small}"
        log.info("norm=auto: %s for a pretrained encoder at %s (docs/pretrained.md)", chosen, why)
    if frozen:
        return functools.partial(FrozenBatchNorm2d, eps=kwargs.get("eps", 1e-5))
    return functools.partial(nn.BatchNorm2d, **kwargs)
