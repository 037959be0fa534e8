"""Cloud-Optimized GeoTIFFs for the remote-read tests, written with rasterio's GDAL ``COG`` driver."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.transform import from_origin


def write_cog(
    src_path: str | Path, dst_path: str | Path, blocksize: int = 256, resampling: str = "NEAREST"
) -> Path:
    """Copy a GeoTIFF to a COG at ``dst_path``: ``blocksize`` tiles, DEFLATE, overviews as GDAL's COG
    driver makes them (``resampling`` NEAREST by default, right for labels and harmless for images)."""
    dst = Path(dst_path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    rasterio.shutil.copy(
        str(src_path), str(dst), driver="COG", blocksize=blocksize, compress="DEFLATE", resampling=resampling
    )
    return dst


def cog_layout(path: str | Path) -> str | None:
    """GDAL's ``LAYOUT`` of a GeoTIFF (``"COG"`` for a Cloud-Optimized one), ``None`` if it has none."""
    with rasterio.open(path) as ds:
        return ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")


def write_cogs(sources: Iterable[str | Path], dst_dir: str | Path, blocksize: int = 256) -> list[Path]:
    """COGs of ``sources`` under ``dst_dir``, each in a folder named like its source's folder:
    ``.../sen1floods11/x.tif`` becomes ``dst_dir/sen1floods11/x.tif``."""
    out = []
    for src in sorted(Path(s) for s in sources):
        out.append(write_cog(src, Path(dst_dir) / src.parent.name / src.name, blocksize=blocksize))
    return out


def write_synthetic_pair(
    folder: str | Path, height: int = 260, width: int = 300, blocksize: int = 64, seed: int = 0
) -> tuple[Path, Path]:
    """A 3-band uint16 image COG and a same-grid uint8 label COG (codes 0..2, nodata 255) in ``folder``:
    ``synthetic/image.tif`` and ``synthetic/label.tif``, tiled ``blocksize`` so a window spans tiles."""
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 4000, size=(3, height, width), dtype=np.uint16)
    label = rng.integers(0, 3, size=(height, width), dtype=np.uint8)
    label[:4, :4] = 255
    folder = Path(folder)
    plain = folder / "_plain"
    plain.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff", height=height, width=width, crs=CRS.from_epsg(32633),
        transform=from_origin(500_000, 5_000_000, 10, 10),
    )  # fmt: skip
    with rasterio.open(plain / "image.tif", "w", count=3, dtype="uint16", nodata=0, **profile) as dst:
        dst.write(image)
    with rasterio.open(plain / "label.tif", "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(label[None])
    out = (
        write_cog(plain / "image.tif", folder / "synthetic" / "image.tif", blocksize=blocksize),
        write_cog(plain / "label.tif", folder / "synthetic" / "label.tif", blocksize=blocksize),
    )
    for f in plain.iterdir():
        f.unlink()
    plain.rmdir()
    return out
