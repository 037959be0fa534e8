"""Per-band normalisation as a torch module, applied to whole batches on the training device.

The loader hands over raw band values (uint16 stays uint16: half the bytes of float32 through
worker shared memory and the host-to-device copy) and :class:`BandNormalize` turns them into
``(x - mean) / std`` in float32 where the model runs. It is meant to be the model's first layer,
so the statistics travel inside every checkpoint and inference normalises exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from geoseg.errors import GeosegError

# raw dtypes a batch is kept in; anything else is converted to float32 by GDAL during the read
BATCH_DTYPES = {
    "uint8": torch.uint8,
    "int16": torch.int16,
    "uint16": torch.uint16,
    "float32": torch.float32,
}


def batch_dtype(dtypes: Sequence[str]) -> str:
    """The raw dtype that holds every scene's values: their common type when cheap, else float32."""
    common = np.result_type(*[np.dtype(d) for d in dtypes])
    if common.name == "int8":
        return "int16"
    return common.name if common.name in BATCH_DTYPES else "float32"


def raw_fill_values(mean: Sequence[float], dtype: str) -> np.ndarray:
    """Per-band value written into invalid pixels: the band mean, so they normalise to about 0."""
    mean = np.asarray(mean, dtype=np.float64)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(np.dtype(dtype))
        mean = np.clip(np.round(mean), info.min, info.max)
    return mean.astype(dtype)


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
