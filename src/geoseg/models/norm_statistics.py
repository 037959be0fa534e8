"""Held statistics for the norms that normalise each image by itself (GroupNorm, GN+WS, InstanceNorm, FRN).

In eval mode BatchNorm normalises with running statistics, so a pixel's output does not depend on
the other pixels of its tile. GroupNorm, InstanceNorm and FRN normalise with the statistics of the
tile itself, so a scene predicted in tiles of 256 px gets another class map than in tiles of 1024.
This module gives those layers statistics that do not depend on the tile, the way BatchNorm holds
running statistics:

- :func:`collect_statistics` runs the model (plain, in eval mode) over calibration windows, e.g.
  windows of the training chip size spread over the scene, and averages each layer's per-window
  statistics: per group the mean and variance (GroupNorm; InstanceNorm has one group per channel),
  per channel the mean square (FRN);
- :func:`hold_statistics` swaps each such layer for a :class:`HeldNorm`, a per-channel affine (and
  FRN's threshold) computed from those averages, until the context ends.

With ``pooled`` the variance also holds the spread of the window means (the statistics of all
windows taken as one image); without it, it is the mean of the windows' own variances, which is what
each layer saw on average at the chip size it was trained on. LayerNorm over channels, BatchNorm,
FrozenBatchNorm and no norm do not depend on the tile and are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from geoseg.models.norms import FilterResponseNorm2d


def is_tile_dependent(module: nn.Module) -> bool:
    """Whether ``module`` normalises each image with statistics over its pixels (so over the tile)."""
    if isinstance(module, nn.GroupNorm | FilterResponseNorm2d):
        return True
    return isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats


def tile_dependent_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` whose output depends on the tile, by module name."""
    return {name: m for name, m in model.named_modules() if is_tile_dependent(m)}


def channels_of(module: nn.Module) -> int:
    """Channels of a tile-dependent layer."""
    return module.num_features if isinstance(module, nn.InstanceNorm2d) else module.num_channels


def groups_of(module: nn.Module) -> int:
    """Statistics groups of a tile-dependent layer: GroupNorm's groups, else one per channel."""
    return module.num_groups if isinstance(module, nn.GroupNorm) else channels_of(module)


@dataclass
class LayerStatistics:
    """Averages over calibration windows of one layer's per-window, per-group statistics (float64).

    For FRN ``mean`` is 0 and ``var`` the mean square ν², which is what FRN divides by.
    """

    windows: int
    mean: torch.Tensor  # (G,) mean of the window means
    var: torch.Tensor  # (G,) mean of the window variances (FRN: of the window mean squares)
    mean_sq: torch.Tensor  # (G,) mean of the squared window means (for the pooled variance)

    def variance(self, pooled: bool) -> torch.Tensor:
        """Per-group variance to normalise with: within windows, or of all windows as one image."""
        if not pooled:
            return self.var
        return self.var + (self.mean_sq - self.mean**2).clamp(min=0)


class _Accumulator:
    """Per-layer sums of window means, variances and squared means, added by a forward pre-hook."""

    def __init__(self, module: nn.Module) -> None:
        self.groups, self.frn = groups_of(module), isinstance(module, FilterResponseNorm2d)
        self.count = 0
        self.sums = torch.zeros(3, self.groups, dtype=torch.float64)

    def __call__(self, _module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].detach().float()
        if x.shape[-1] * x.shape[-2] <= 1:  # a 1x1 map (image pooling) normalises to its bias anyway
            return
        flat = x.reshape(x.shape[0], self.groups, -1)
        if self.frn:
            var, mean = flat.pow(2).mean(dim=2), torch.zeros_like(flat[:, :, 0])
        else:
            var, mean = torch.var_mean(flat, dim=2, correction=0)
        self.sums += torch.stack([mean.sum(0), var.sum(0), mean.pow(2).sum(0)]).double().cpu()
        self.count += x.shape[0]

    def result(self) -> LayerStatistics | None:
        if not self.count:
            return None
        mean, var, mean_sq = (self.sums / self.count).unbind(0)
        return LayerStatistics(self.count, mean, var, mean_sq)


@torch.inference_mode()
def collect_statistics(
    model: nn.Module, batches: Iterable[torch.Tensor], amp: torch.dtype | None = None
) -> dict[str, LayerStatistics]:
    """Each tile-dependent layer's statistics averaged over the windows of ``batches`` (raw chips on
    the model's device), with the model as it is (plain norms, eval mode)."""
    layers = tile_dependent_layers(model)
    accumulators = {name: _Accumulator(m) for name, m in layers.items()}
    hooks = [layers[name].register_forward_pre_hook(acc) for name, acc in accumulators.items()]
    try:
        for x in batches:
            with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                model(x)
    finally:
        for hook in hooks:
            hook.remove()
    stats = {name: acc.result() for name, acc in accumulators.items()}
    return {name: s for name, s in stats.items() if s is not None}


class HeldNorm(nn.Module):
    """A tile-dependent norm layer with held statistics: ``y = x * scale + shift`` per channel (FRN:
    then ``max(y, tau)``). A 1x1 map goes through the original layer (it normalises to its bias)."""

    def __init__(self, original: nn.Module, stats: LayerStatistics, pooled: bool) -> None:
        super().__init__()
        self.original = original
        channels = channels_of(original)
        per_group = channels // stats.mean.numel()
        mean = stats.mean.repeat_interleave(per_group)
        inv = torch.rsqrt(stats.variance(pooled).repeat_interleave(per_group) + original.eps)
        weight = getattr(original, "weight", None)
        bias = getattr(original, "bias", None)
        ones = torch.ones(channels, dtype=torch.float64)
        w = weight.detach().double().cpu() if weight is not None else ones
        b = bias.detach().double().cpu() if bias is not None else 0 * ones
        device = next((p.device for p in original.parameters()), torch.device("cpu"))
        scale = (w * inv).float()
        shift = (b - mean * w * inv).float()
        self.register_buffer("scale", scale.view(1, -1, 1, 1).to(device), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1).to(device), persistent=False)
        tau = getattr(original, "tau", None) if isinstance(original, FilterResponseNorm2d) else None
        self.tau = None if tau is None else tau.detach().view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] <= 1:
            return self.original(x)
        y = x.float() * self.scale + self.shift
        if self.tau is not None:
            y = torch.maximum(y, self.tau.float())
        return y.to(x.dtype)


@contextmanager
def hold_statistics(
    model: nn.Module, stats: dict[str, LayerStatistics], pooled: bool = False
) -> Iterator[int]:
    """Within the context every tile-dependent layer with statistics in ``stats`` is a :class:`HeldNorm`;
    yields how many layers were swapped. The original layers are put back on exit."""
    if not stats:  # nothing to hold (also for an exported model, which has no modules to swap)
        yield 0
        return
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for name, layer in tile_dependent_layers(model).items():
            if name not in stats:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, HeldNorm(layer, stats[name], pooled))
            swapped.append((parent, child, layer))
        yield len(swapped)
    finally:
        for parent, child, layer in reversed(swapped):
            setattr(parent, child, layer)
