"""Label handling: class codes to contiguous indices, and reading labels on the image grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geoseg.data.scenes import Scene, label_fill_value


class ClassMap:
    """Maps label codes (any dtype, gaps allowed) to indices ``0..K-1``; anything else to ``ignore_index``."""

    def __init__(self, codes: Sequence[int], ignore_index: int = 255) -> None:
        codes = np.asarray(codes, dtype=np.float64)
        if len(np.unique(codes)) != len(codes):
            raise ValueError(f"duplicate class codes in {codes.tolist()}")
        self.order = np.argsort(codes)
        self.sorted_codes = codes[self.order]
        self.codes = codes
        self.ignore_index = ignore_index

    def __call__(self, label: np.ndarray) -> np.ndarray:
        """int64 indices of the same shape as ``label``."""
        if len(self.sorted_codes) == 0:
            return np.full(label.shape, self.ignore_index, dtype=np.int64)
        values = label.astype(np.float64, copy=False)
        pos = np.searchsorted(self.sorted_codes, values).clip(0, len(self.sorted_codes) - 1)
        hit = self.sorted_codes[pos] == values
        return np.where(hit, self.order[pos], self.ignore_index).astype(np.int64)


def open_label_on_grid(scene: Scene, codes: Sequence[int]) -> tuple[rasterio.DatasetReader, object]:
    """Open the label and a reader that yields it on the image grid.

    Returns ``(src, reader)``: the same object when the label shares the image grid (no
    reprojection per chip); otherwise a nearest-neighbour :class:`WarpedVRT` onto the image grid,
    whose pixels outside the label's extent hold a fill value that is no class (so become ignore).
    """
    assert scene.label is not None
    src = rasterio.open(scene.label)
    if scene.label_on_grid:
        return src, src
    with rasterio.open(scene.image) as img:
        crs, transform = img.crs, img.transform
    fill = label_fill_value(src.dtypes[0], scene.label_nodata, codes)
    vrt = WarpedVRT(
        src,
        crs=crs,
        transform=transform,
        width=scene.width,
        height=scene.height,
        resampling=Resampling.nearest,
        src_nodata=scene.label_nodata,
        nodata=fill,
    )
    return src, vrt
