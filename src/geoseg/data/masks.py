"""Coarse validity masks for chip sampling: image validity (by the scene's rule) and label coverage.

The per-pixel rule itself is :func:`geoseg.data.stack_reader.invalid_pixels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from geoseg.data.labels import ClassMap, read_label_decimated
from geoseg.data.scenes import Scene


def coarse_valid_mask(scene: Scene, step: int, class_map: ClassMap | None) -> np.ndarray:
    """Valid fraction estimate on cells of ``step`` px (nearest decimated read; uses overviews if any).

    A pixel counts as valid when the image is valid there and, for labelled scenes, the label maps
    to a class. Used to weight and filter random chips, so an estimate is enough.
    """
    shape = (math.ceil(scene.height / step), math.ceil(scene.width / step))
    valid = coarse_image_valid(scene, shape)
    if scene.label is not None and class_map is not None:
        lab = read_label_decimated(scene, class_map.codes.astype(int).tolist(), shape)
        valid &= class_map(lab) != class_map.ignore_index
    return valid.astype(np.float64)


def coarse_image_valid(scene: Scene, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool validity of the image on a coarse grid of ``shape``, by nearest decimated reads.

    A decimated read decodes every block it samples, so it costs about as much per band as a full
    read; the estimate reads as few bands as it can (the chip reader applies the exact rule to
    every band of every chip):

    - nothing for a scene whose files are integer, on the reference grid, without nodata or a mask band;
    - ``data.invalid=all``: the first band of each integer file first; when it never holds nodata,
      every cell is valid (a pixel is nodata only where every band is), else every band is read;
    - ``data.invalid=any``: the first band of each integer file (every band of a file whose bands
      declare different nodata values) and every band of a float file (NaN may be in any band).
      Nodata in an integer file's other bands only (a Landsat band-7 gap) is not in the estimate.
    """
    if scene.is_series:  # valid where at least min_valid_dates dates are
        counts = sum(coarse_image_valid(d, shape).astype(np.int32) for d in scene.date_scenes())
        return counts >= min(scene.min_valid_dates, len(scene.dates))
    files = scene.stack
    clean = scene.date_mask is None and all(
        f.dtype[0] in "ui" and f.on_grid and not f.masked and not any(_number(v) for v in f.nodata)
        for f in files
    )
    if clean:
        return np.ones(shape, dtype=bool)
    reader = scene.reader()
    try:
        _, invalid = reader.read_decimated(shape, first_band_only=True)
        if scene.invalid == "all" and invalid is not None:
            _, invalid = reader.read_decimated(shape)
    finally:
        reader.close()
    return np.ones(shape, dtype=bool) if invalid is None else ~invalid


def _number(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def label_codes(classes: Sequence[dict] | None) -> list[int]:
    """The ``code`` of each entry of ``data.classes``."""
    return [int(c["code"]) for c in classes or []]
