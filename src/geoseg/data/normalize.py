"""The raw dtypes batches keep, and the value invalid pixels get.

The loader hands over raw band values (uint16 stays uint16: half the bytes of float32 through
worker shared memory and the host-to-device copy);
:class:`~geoseg.models.band_normalize.BandNormalize`, the model's first layer, turns them into
``(x - mean) / std`` in float32 where the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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
