"""Pixels for people: bands picked and stretched to colour, class maps coloured, nodata in dark grey.

Shared by the scene quicklook and the TensorBoard example images of training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geoseg.classes import ClassInfo

COLOUR_NAMES = (("red", "b04", "b4"), ("green", "b03", "b3"), ("blue", "b02", "b2"))
NODATA_RGB = (40, 40, 40)


def display_bands(names: Sequence[str | None], bands: Sequence[int]) -> list[int]:
    """Red, green and blue among ``bands`` by their names; else the first three (or the first).

    ``names`` are the names of every stacked band, ``bands`` 1-based stack indices.
    """
    parts = {b: set(((names[b - 1] if b <= len(names) else None) or "").lower().replace("-", "_").split("_"))
             for b in bands}  # fmt: skip
    picked = [next((b for b in bands if parts[b] & set(keys)), None) for keys in COLOUR_NAMES]
    if all(p is not None for p in picked):
        return picked  # type: ignore[return-value]
    return list(bands[:3]) if len(bands) >= 3 else [bands[0]] * 3


def stretch(arr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(3, h, w) -> (h, w, 3) uint8, each band stretched between its 2nd and 98th percentiles."""
    out = np.zeros((*arr.shape[1:], 3), dtype=np.uint8)
    for i, band in enumerate(arr.astype(np.float64)):
        values = band[valid] if valid.any() else band.ravel()
        lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        scaled = np.clip((band - lo) / max(hi - lo, 1e-12) * 255, 0, 255)
        out[..., i] = np.where(valid, scaled, 0).astype(np.uint8)
    out[~valid] = NODATA_RGB
    return out


def colour_classes(labels: np.ndarray, classes: ClassInfo, nodata: int | None) -> np.ndarray:
    lut = np.zeros((max(len(classes.colors), int(labels.max(initial=0)) + 1), 3), dtype=np.uint8)
    lut[: len(classes.colors)] = np.asarray(classes.colors, dtype=np.uint8)
    rgb = lut[np.minimum(labels, len(lut) - 1)]
    if nodata is not None:
        rgb[labels == nodata] = NODATA_RGB
    return rgb
