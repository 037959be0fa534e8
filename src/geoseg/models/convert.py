"""Swap every 2-D norm layer of a model, encoder and decoder alike, for one chosen norm.

smp builds its models with BatchNorm2d, plus FPN's hard-coded GroupNorm and, in timm encoders,
norm+activation modules (``BatchNormAct2d``). :func:`convert_norm` replaces all of them:

- γ/β are copied where the shapes match, and running statistics are copied into a target that
  keeps them (BatchNorm, FrozenBatchNorm);
- a norm+activation module becomes ``Sequential(norm, drop, act)``, so the activation stays;
- token LayerNorms (``nn.LayerNorm`` over the last dimension, as in transformer encoders) are not
  feature-map norms and are left alone, and counted as such.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from geoseg.errors import GeosegError
from geoseg.models.norms import FilterResponseNorm2d, LayerNorm2d, NormFactory, norm_name

log = logging.getLogger(__name__)

# timm's 2-D norms (timm is a dependency of smp); those with an activation are norm+act modules
TIMM_FEATURE_NORMS = (
    "BatchNormAct2d", "FrozenBatchNormAct2d", "GroupNormAct", "LayerNorm2d", "LayerNormAct2d",
    "LayerNorm2dFp32", "LayerNormAct2dFp32", "RmsNorm2d", "RmsNormAct2d",
)  # fmt: skip


def timm_feature_norms() -> tuple[type, ...]:
    """The timm 2-D norm classes that this timm version has."""
    try:
        import timm.layers
    except ImportError:  # pragma: no cover - smp without timm
        return ()
    return tuple(getattr(timm.layers, name) for name in TIMM_FEATURE_NORMS if hasattr(timm.layers, name))


FEATURE_NORMS = (
    nn.BatchNorm2d,  # SyncBatchNorm and timm's BatchNormAct2d too (subclasses)
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    FrozenBatchNorm2d,
    LayerNorm2d,
    FilterResponseNorm2d,
    *timm_feature_norms(),
)
ALL_NORMS = (*FEATURE_NORMS, nn.LayerNorm)
STATE_KEYS = ("weight", "bias", "running_mean", "running_var")


def is_feature_norm(module: nn.Module) -> bool:
    """Whether ``module`` normalises NCHW feature maps (what :func:`convert_norm` replaces)."""
    return isinstance(module, FEATURE_NORMS)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is any norm layer, token LayerNorms included."""
    return isinstance(module, ALL_NORMS)


def norm_counts(model: nn.Module) -> dict[str, int]:
    """How many norm layers of each type ``model`` has, e.g. ``{"BatchNorm2d": 20, "GroupNorm": 4}``."""
    return dict(sorted(Counter(type(m).__name__ for m in model.modules() if is_norm(m)).items()))


def format_counts(counts: dict[str, int]) -> str:
    """``BatchNorm2d×20 + GroupNorm×4``, or ``none``."""
    return " + ".join(f"{name}×{n}" for name, n in counts.items()) or "none"


@dataclass
class NormSummary:
    """What :func:`convert_norm` did: layer-type counts before and after, and what was lost."""

    norm: str
    before: dict[str, int]
    after: dict[str, int]
    replaced: int = 0
    dropped_running_stats: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the model's norm layers are of other types now (not so for batchnorm on a BN model)."""
        return self.before != self.after

    def __str__(self) -> str:
        return f"norm={self.norm}: {format_counts(self.before)} -> {format_counts(self.after)}"

    def as_dict(self) -> dict:
        return {"norm": self.norm, "before": self.before, "after": self.after, "replaced": self.replaced}


def num_channels(module: nn.Module) -> int:
    """The channel count a norm layer normalises."""
    for attr in ("num_features", "num_channels"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[0])
    return int(module.weight.shape[0])


def tensor_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A norm's γ/β and running statistics, whether held as parameters or buffers."""
    state = {}
    for key in STATE_KEYS:
        value = getattr(module, key, None)
        if isinstance(value, torch.Tensor):
            state[key] = value
    return state


def copy_norm_state(source: nn.Module, target: nn.Module) -> bool:
    """Copy γ/β and running statistics where both have them with equal shapes.

    Returns whether the source had running statistics that the target has no place for.
    """
    src, dst = tensor_state(source), tensor_state(target)
    with torch.no_grad():
        for key, value in src.items():
            if key in dst and dst[key].shape == value.shape:
                dst[key].copy_(value)
    return "running_mean" in src and "running_mean" not in dst


def replacement(name: str, old: nn.Module, norm: NormFactory) -> tuple[nn.Module, bool]:
    """The new module for norm layer ``name`` and whether running statistics were dropped."""
    try:
        new = norm(num_channels(old))
    except GeosegError as err:
        raise GeosegError(f"norm layer '{name}': {err}") from None
    ref = next(iter(tensor_state(old).values()), None)
    if ref is not None:
        new = new.to(device=ref.device)
    dropped = copy_norm_state(old, new)
    new.train(old.training)
    act = getattr(old, "act", None)
    if isinstance(act, nn.Module):  # timm norm+activation: keep the activation (and its dropout)
        new = nn.Sequential(new, getattr(old, "drop", nn.Identity()), act)
    return new, dropped


def convert_norm(model: nn.Module, norm: NormFactory) -> NormSummary:
    """Replace every feature-map norm of ``model`` in place with ``norm(num_channels)``."""
    summary = NormSummary(norm=norm_name(norm), before=norm_counts(model), after={})
    targets = [(name, m) for name, m in model.named_modules() if is_feature_norm(m)]
    for name, old in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        new, dropped = replacement(name, old, norm)
        setattr(parent, child, new)
        summary.replaced += 1
        if dropped:
            summary.dropped_running_stats.append(name)
    summary.after = norm_counts(model)
    if summary.changed:
        log.info("%s (%d layers replaced)", summary, summary.replaced)
    else:  # norm=batchnorm on smp's BatchNorm models: nothing to say on every command
        log.debug("%s: the model's own norm layers, unchanged", summary)
    return summary
