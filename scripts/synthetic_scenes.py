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

LAYOUTS = {
    "tiled": {"tiled": True, "blockxsize": 256, "blockysize": 256},
    "striped": {"tiled": False},
}


def write_synthetic(path: Path, label: Path, size: int, layout: str = "tiled", bands: int = 13) -> None:
    """A ``bands``-band uint16 scene and its 4-class label, 256 rows at a time to keep memory low.

    ``layout``: ``tiled`` (256-px tiles), ``striped`` (GDAL's default strips) or ``cog`` (a Cloud
    Optimized GeoTIFF: 512-px tiles and overviews, made from a tiled copy). All deflate-compressed.
    """
    if path.exists() and label.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    blocks = LAYOUTS["striped" if layout == "striped" else "tiled"]
    profile = dict(
        driver="GTiff", width=size, height=size, crs="EPSG:32633", compress="deflate", interleave="pixel",
        transform=from_origin(500_000, 5_000_000, 10, 10), **blocks,
    )  # fmt: skip
    tmp_img, tmp_lab = path.with_name(path.name + ".part"), label.with_name(label.name + ".part")
    with (
        rasterio.open(tmp_img, "w", count=bands, dtype="uint16", nodata=0, **profile) as img,
        rasterio.open(tmp_lab, "w", count=1, dtype="uint8", nodata=255, **profile) as lab,
    ):
        for row in range(0, size, 256):
            rows = min(256, size - row)
            base = rng.integers(200, 3000, size=(bands, 1, 1))
            slab = base + rng.normal(0, 150, size=(bands, rows, size))
            window = Window(0, row, size, rows)
            img.write(slab.clip(1, 60000).astype(np.uint16), window=window)
            lab.write(rng.integers(0, 4, size=(1, rows, size), dtype=np.uint8), window=window)
    if layout == "cog":
        for tmp in (tmp_img, tmp_lab):
            cog = tmp.with_name(tmp.name + ".cog")
            raster_copy(tmp, cog, driver="COG", compress="deflate", blocksize=512)
            cog.rename(tmp)
    tmp_img.rename(path)
    tmp_lab.rename(label)
