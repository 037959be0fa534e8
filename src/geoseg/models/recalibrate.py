"""Precise BatchNorm: recompute running statistics as exact averages over training batches.

During training the running mean/var are an exponential average of batch statistics taken while
the weights were still moving. :func:`recalibrate_bn` replaces them, for the weights as they are
now, with the population mean and unbiased variance of each BatchNorm layer's input over
``num_batches`` batches (merged in float64 with Chan's formula, and over all ranks under DDP).

As in precise-BN (Wu & Johnson, 2021) and ``torch.optim.swa_utils.update_bn``, the forward passes
run with BatchNorm in train mode, so each layer sees the inputs it sees in training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from itertools import islice

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


class _Moments:
    """Running count, mean and sum of squared deviations per channel, in float64."""

    def __init__(self, channels: int, device: torch.device) -> None:
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor) -> None:
        dims = [d for d in range(x.ndim) if d != 1]
        var, mean = torch.var_mean(x.detach().float(), dim=dims, correction=0)
        n = x.numel() / x.shape[1]
        total = self.count + n
        delta = mean.double() - self.mean
        self.mean += delta * (n / total)
        self.m2 += var.double() * n + delta**2 * (self.count * n / total)
        self.count = total

    def all_reduce(self) -> None:
        """Merge the moments of every rank (sums of n, n·mean and m2 + n·mean²)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        packed = torch.cat([self.count.view(1), self.count * self.mean, self.m2 + self.count * self.mean**2])
        dist.all_reduce(packed)
        channels = self.mean.numel()
        self.count = packed[0]
        self.mean = packed[1 : 1 + channels] / self.count
        self.m2 = packed[1 + channels :] - self.count * self.mean**2


def bn_layers(model: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers that keep running statistics (FrozenBatchNorm is not one)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def batch_images(batch: object) -> torch.Tensor:
    """The image tensor of a loader batch: a tensor, a mapping with ``image``, or a tuple's first item."""
    if isinstance(batch, Mapping):
        return batch["image"]
    if isinstance(batch, list | tuple):
        return batch[0]
    return batch


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Iterable,
    num_batches: int,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> int:
    """Set every BatchNorm's running mean/var to its input's statistics over ``num_batches`` batches.

    Returns the number of batches used (fewer than asked when the loader runs out). The model's
    train/eval modes are restored afterwards.
    """
    layers = bn_layers(model)
    if not layers:
        return 0
    if num_batches < 1:
        raise GeosegError(f"trainer.precise_bn.num_batches={num_batches} must be at least 1")
    device = torch.device(device) if device is not None else layers[0].running_mean.device
    moments = {m: _Moments(m.num_features, device) for m in layers}
    hooks = [m.register_forward_pre_hook(lambda mod, args: moments[mod].add(args[0])) for m in layers]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in layers:
        m.train()
    seen = 0
    try:
        for batch in islice(loader, num_batches):
            images = batch_images(batch).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                model(images)
            seen += 1
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.train(training)
    if seen == 0:
        raise GeosegError("BN recalibration got no batches: the training loader is empty")
    for m, mom in moments.items():
        mom.all_reduce()
        unbiased = mom.m2 / (mom.count - 1).clamp(min=1)
        m.running_mean.copy_(mom.mean.to(m.running_mean.dtype))
        m.running_var.copy_(unbiased.to(m.running_var.dtype))
        if m.num_batches_tracked is not None:
            m.num_batches_tracked += seen
    log.info("recalibrated %d BatchNorm layers over %d batches", len(layers), seen)
    return seen
