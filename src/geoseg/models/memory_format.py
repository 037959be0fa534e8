"""NCHW or NHWC (``channels_last``) per model: ``channels_last: auto`` picks the faster layout for its norms.

Convolutions and BatchNorm have NHWC kernels (cuDNN, oneDNN) that beat NCHW, most of all with AMP
on tensor cores. GroupNorm, InstanceNorm and the per-pixel LayerNorm do not: PyTorch computes them
through NCHW-shaped reductions, so a channels_last tensor is converted (copied) at each of them, and
on this project's CPU measurement GroupNorm with bf16 lost 18% in NHWC (BENCHMARKS.md). ``auto``
therefore means NHWC for models whose norms are all BatchNorm-like (or none), NCHW otherwise.
"""

from __future__ import annotations

from torch import nn

from geoseg.errors import GeosegError
from geoseg.models.norms import LayerNorm2d

NHWC_SLOW_NORMS = (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.LayerNorm, LayerNorm2d)


def slow_nhwc_norms(model: nn.Module) -> list[str]:
    """Names of the norm classes in ``model`` that have no fast channels_last path."""
    return sorted({type(m).__name__ for m in model.modules() if isinstance(m, NHWC_SLOW_NORMS)})


def channels_last_for(option: object, model: nn.Module, name: str = "trainer.channels_last") -> bool:
    """Resolve a ``channels_last`` option (true, false or auto) for ``model``; ``name`` is for errors."""
    if isinstance(option, bool):
        return option
    if option == "auto":
        return not slow_nhwc_norms(model)
    raise GeosegError(f"{name}={option!r} must be true, false or auto.")
