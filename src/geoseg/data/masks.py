"""Coarse validity masks for chip sampling: image validity (by the scene's rule) and label coverage.

The per-pixel rule itself is :func:`geoseg.data.stack_reader.invalid_pixels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rasterio.enums import Resampling

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.scenes import Scene


def coarse_valid_mask(scene: Scene, step: int, class_map: ClassMap | None) -> np.ndarray:
    """Valid fraction estimate on cells of ``step`` px (nearest decimated read; uses overviews if any).

    A pixel counts as valid when the image is valid there and, for labelled scenes, the label maps
    to a class. Used to weight and filter random chips, so an estimate is enough.
    """
    shape = (math.ceil(scene.height / step), math.ceil(scene.width / step))
    valid = coarse_image_valid(scene, shape)
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


def coarse_image_valid(scene: Scene, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool validity of the image on a coarse grid of ``shape``, by nearest decimated reads.

    Reads nothing for a scene whose files are integer, on the reference grid and without nodata
    (valid everywhere). With ``data.invalid=all`` and one file, the first band is read alone: when
    it never holds nodata on the grid every cell is valid and the other bands are never read.
    Otherwise every selected band is read, so the estimate follows the scene's validity rule.
    """
    files = scene.stack
    clean = all(f.dtype[0] in "ui" and f.on_grid and not any(_number(v) for v in f.nodata) for f in files)
    if clean:
        return np.ones(shape, dtype=bool)
    reader = scene.reader()
    try:
        if scene.invalid == "all" and len(files) == 1 and not scene.is_float:
            _, first = reader.read_decimated(shape, first_band_only=True)
            if first is None:
                return np.ones(shape, dtype=bool)
        _, invalid = reader.read_decimated(shape)
    finally:
        reader.close()
    return np.ones(shape, dtype=bool) if invalid is None else ~invalid


def _number(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def label_codes(classes: Sequence[dict] | None) -> list[int]:
    """The ``code`` of each entry of ``data.classes``."""
    return [int(c["code"]) for c in classes or []]
