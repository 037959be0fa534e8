"""Validation: every rank runs its shard of the grid chips; the confusion matrix is summed over ranks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from geoseg.engine.distributed import DistInfo, all_reduce_sum
from geoseg.engine.metrics import ConfusionMatrix, compute_metrics
from geoseg.engine.runtime import to_device


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: nn.Module,
    classes: list[str],
    ignore_index: int,
    info: DistInfo,
    amp: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Metrics of ``model`` in eval mode over ``loader``, plus the mean loss and the confusion matrix."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(len(classes), ignore_index, info.device)
    totals = torch.zeros(2, dtype=torch.float64, device=info.device)  # sum of loss x chips, chips
    for batch in loader:
        images, target = to_device(batch, info.device, channels_last)
        with torch.autocast(info.device.type, dtype=amp, enabled=amp is not None):
            logits = model(images)
        cm.update(logits.argmax(1), target)
        if (target != ignore_index).any():  # a chip of ignored pixels only has no loss
            n = float(len(images))
            totals += torch.stack([loss_fn(logits, target).double() * n, totals.new_tensor(n)])
    model.train(was_training)
    cm.all_reduce(info)
    all_reduce_sum(totals, info)
    metrics = compute_metrics(cm.matrix, classes)
    metrics["loss"] = float(totals[0] / totals[1]) if totals[1] > 0 else math.nan
    metrics["confusion"] = cm.matrix.cpu().tolist()
    return metrics
