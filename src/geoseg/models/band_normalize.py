"""Per-band normalisation as a torch module, applied to whole batches on the training device.

The loader hands over raw band values; :class:`BandNormalize` turns them into ``(x - mean) / std``
in float32 where the model runs. It is the model's first layer, so the statistics travel inside
every checkpoint and inference normalises exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from geoseg.errors import GeosegError


class BandStatistics(Protocol):
    """What a model needs of band statistics (``geoseg.data.stats.BandStats`` is one)."""

    bands: Sequence[int | str]
    mean: Sequence[float]
    std: Sequence[float]


class BandNormalize(nn.Module):
    """``(x - mean) / std`` per band for (B, C, H, W) or (C, H, W) raw tensors, in float32."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        std_arr = np.asarray(std, dtype=np.float64)
        scale = 1.0 / np.where(std_arr > 0, std_arr, 1.0)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(-1, 1, 1))

    @property
    def num_bands(self) -> int:
        return self.mean.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] != self.num_bands:
            raise GeosegError(
                f"the input has {x.shape[-3]} bands but the band statistics have {self.num_bands}; "
                "check data.bands against the stats file (recompute it with `geoseg stats`)."
            )
        return (x.float() - self.mean) * self.scale
