"""Validity masks: image nodata (declared, overridden, or non-finite) and label coverage."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rasterio.enums import Resampling

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.scenes import Scene


def image_invalid(
    arr: np.ndarray, nodata: float | None, check_finite: bool | None = None
) -> np.ndarray | None:
    """(H, W) bool of invalid pixels of a (C, H, W) chip, or None when every pixel is valid.

    A pixel is invalid when **every** selected band holds ``nodata`` (GDAL's and rasterio's
    dataset-mask convention: a valid value in any band keeps the pixel) or when **any** band is
    non-finite (NaN/inf would poison the model). The nodata test looks at the first band and checks
    the other bands only where it matched, so a chip without nodata costs one pass over one band.
    ``check_finite`` defaults to whether ``arr`` is floating point.
    """
    if check_finite is None:
        check_finite = np.issubdtype(arr.dtype, np.floating)
    invalid = None
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        first = arr[0] == nodata
        if first.any():
            rows, cols = np.nonzero(first)
            first[rows, cols] = (arr[1:, rows, cols] == nodata).all(axis=0)
            invalid = first
    if check_finite:
        with np.errstate(over="ignore", invalid="ignore"):
            nonfinite = ~np.isfinite(arr.sum(axis=0, dtype=np.float64))  # one pass; NaN or inf in any band
        if nonfinite.any():  # finite float64 values near the limit can overflow the sum: check each band
            rows, cols = np.nonzero(nonfinite)
            nonfinite[rows, cols] = ~np.isfinite(arr[:, rows, cols]).all(axis=0)
        invalid = nonfinite if invalid is None else invalid | nonfinite
    return invalid if invalid is not None and invalid.any() else None


def image_valid(arr: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) bool of valid pixels (see :func:`image_invalid`)."""
    invalid = image_invalid(arr, nodata)
    return np.ones(arr.shape[1:], dtype=bool) if invalid is None else ~invalid


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
