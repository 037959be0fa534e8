"""Synthetic multispectral scenes for the benchmarks: uint16 bands with a uint8 label, any layout.

Imported by ``bench_vs_torchgeo.py`` and ``bench_train_input.py`` (run from the repo root, so this
folder is on ``sys.path``). Files are written to a temporary name and renamed, and reused when they
already exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.shutil import copy as raster_copy
from rasterio.transform import from_origin
from rasterio.windows import Window


def write_synthetic(
    path: Path, label: Path, size: int, layout: str = "tiled", bands: int = 13, dtype: str = "uint16",
    block: int = 256,
) -> None:  # fmt: skip
    """A ``bands``-band ``dtype`` scene and its 4-class label, 256 rows at a time to keep memory low.

    ``layout``: ``tiled`` (``block``-px tiles, 256 by default), ``striped`` (GDAL's default strips) or
    ``cog`` (a Cloud Optimized GeoTIFF: 512-px tiles and overviews, made from a tiled copy). All
    deflate-compressed.
    """
    if path.exists() and label.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tiled = layout != "striped"
    blocks = {"tiled": True, "blockxsize": block, "blockysize": block} if tiled else {"tiled": False}
    profile = dict(
        driver="GTiff", width=size, height=size, crs="EPSG:32633", compress="deflate", interleave="pixel",
        transform=from_origin(500_000, 5_000_000, 10, 10), **blocks,
    )  # fmt: skip
    tmp_img, tmp_lab = path.with_name(path.name + ".part"), label.with_name(label.name + ".part")
    with (
        rasterio.open(tmp_img, "w", count=bands, dtype=dtype, nodata=0, **profile) as img,
        rasterio.open(tmp_lab, "w", count=1, dtype="uint8", nodata=255, **profile) as lab,
    ):
        for row in range(0, size, 256):
            rows = min(256, size - row)
            base = rng.integers(200, 3000, size=(bands, 1, 1))
            slab = base + rng.normal(0, 150, size=(bands, rows, size))
            window = Window(0, row, size, rows)
            img.write(slab.clip(1, min(60000, np.iinfo(dtype).max)).astype(dtype), window=window)
            lab.write(rng.integers(0, 4, size=(1, rows, size), dtype=np.uint8), window=window)
    if layout == "cog":
        for tmp in (tmp_img, tmp_lab):
            cog = tmp.with_name(tmp.name + ".cog")
            raster_copy(tmp, cog, driver="COG", compress="deflate", blocksize=512)
            cog.rename(tmp)
    tmp_img.rename(path)
    tmp_lab.rename(label)
