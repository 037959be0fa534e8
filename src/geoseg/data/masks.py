"""Validity masks: image nodata (declared, overridden, or non-finite) and label coverage."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.scenes import Scene


def image_valid(arr: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) bool: a pixel is valid when no selected band is nodata and all bands are finite."""
    valid = np.ones(arr.shape[1:], dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= ~np.any(arr == nodata, axis=0)
    if np.issubdtype(arr.dtype, np.floating):
        valid &= np.all(np.isfinite(arr), axis=0)
    return valid


def coarse_valid_mask(scene: Scene, step: int, class_map: ClassMap | None) -> np.ndarray:
    """Valid fraction estimate on cells of ``step`` px (nearest decimated read; uses overviews if any).

    A pixel counts as valid when the image is valid there and, for labelled scenes, the label maps
    to a class. Used to weight and filter random chips, so an estimate is enough.
    """
    shape = (math.ceil(scene.height / step), math.ceil(scene.width / step))
    with rasterio.open(scene.image) as src:
        arr = src.read(
            indexes=list(scene.bands), out_shape=(len(scene.bands), *shape), resampling=Resampling.nearest
        )
    valid = image_valid(arr, scene.nodata)
    if scene.label is not None and class_map is not None:
        src, reader = open_label_on_grid(scene, class_map.codes.astype(int).tolist())
        try:
            lab = reader.read(1, out_shape=shape, resampling=Resampling.nearest)
        finally:
            if reader is not src:
                reader.close()
            src.close()
        valid &= class_map(lab) != class_map.ignore_index
    return valid.astype(np.float64)


def label_codes(classes: Sequence[dict] | None) -> list[int]:
    """The ``code`` of each entry of ``data.classes``."""
    return [int(c["code"]) for c in classes or []]
