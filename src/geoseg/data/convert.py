"""Rewrite scenes into the GeoTIFF layout that trains fastest: tiled, a chip-sized block, little compression.

Each file is copied block by block (memory is one block row), with the same CRS, transform, size, dtype,
nodata, band names, colour table and tags, into a tiled GeoTIFF with ``block``-px blocks and ``compress``
(``none`` by default: random 512-px chips read 8x faster than from deflate tiles, BENCHMARKS.md)
(``none``, ``zstd``, ``lzw``, ``deflate`` or ``lerc_zstd``, with the predictor that suits the dtype), then
overviews (average for images, nearest for class maps: a colour table or one uint8 band). The output is
written under a temporary name and renamed, so an interrupted folder resumes with ``existing=skip``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from geoseg.data.rasters import open_raster
from geoseg.errors import GeosegError
from geoseg.io import atomic_write
from geoseg.output_policy import CONVERTED_TAG

COMPRESSIONS = ("none", "zstd", "lzw", "deflate", "lerc_zstd")


def is_class_map(src: rasterio.DatasetReader) -> bool:
    """A label raster: one band of uint8 (or one with a colour table), to be resampled by nearest."""
    if src.count != 1:
        return False
    try:
        src.colormap(1)
        return True
    except ValueError:
        return src.dtypes[0] == "uint8"


def output_profile(src: rasterio.DatasetReader, block: int, compress: str) -> dict[str, Any]:
    """The source's profile as a tiled GeoTIFF with ``block``-px blocks and ``compress``."""
    if compress not in COMPRESSIONS:
        raise GeosegError(f"compress={compress!r} is not one of {', '.join(COMPRESSIONS)}")
    if block % 16 or block < 16:
        raise GeosegError(f"block={block} must be a multiple of 16 px (GeoTIFF tiles), e.g. 256 or 512")
    profile = src.profile.copy()
    profile.update(driver="GTiff", tiled=True, blockxsize=block, blockysize=block, BIGTIFF="IF_SAFER",
                   interleave="pixel")  # fmt: skip
    for key in ("compress", "predictor", "zlevel", "zstd_level", "photometric"):
        profile.pop(key, None)
    if compress != "none":
        profile["compress"] = compress
    floating = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
    if compress in ("zstd", "lzw", "deflate"):
        profile["predictor"] = 3 if floating else 2
    if compress == "lerc_zstd":
        profile["max_z_error"] = 0  # lossless
    return profile


def block_rows(height: int, width: int, block: int) -> Iterator[Window]:
    """Full-width windows of ``block`` rows, top to bottom."""
    for row in range(0, height, block):
        yield Window(0, row, width, min(block, height - row))


def overview_factors(height: int, width: int, block: int) -> list[int]:
    """2, 4, 8, ... until the overview fits in one block."""
    factors, factor = [], 2
    while max(height, width) / factor >= block / 2 and factor <= 2**12:
        factors.append(factor)
        factor *= 2
    return factors


def convert_file(source: str, target: str, block: int = 512, compress: str = "none", overviews: bool = True,
                 on_rows: Any = None) -> dict[str, Any]:  # fmt: skip
    """Write ``target`` as ``source`` in the training layout; returns sizes and the options used."""
    with open_raster(source, "scene", "input=") as src:
        profile = output_profile(src, block, compress)
        labels = is_class_map(src)

        def write(tmp: str) -> None:
            with rasterio.open(tmp, "w", **profile) as dst:
                for window in block_rows(src.height, src.width, block):
                    dst.write(src.read(window=window), window=window)
                    if on_rows is not None:
                        on_rows(int(window.height))
                for band in range(1, src.count + 1):
                    dst.set_band_description(band, src.descriptions[band - 1] or "")
                    dst.update_tags(band, **src.tags(band))
                dst.update_tags(**src.tags(), **{CONVERTED_TAG: os.path.abspath(source)})
                dst.colorinterp = src.colorinterp
                if src.count == 1:
                    with contextlib.suppress(ValueError):  # no colour table
                        dst.write_colormap(1, src.colormap(1))
                if overviews:
                    factors = overview_factors(src.height, src.width, block)
                    if factors:
                        dst.build_overviews(factors, Resampling.nearest if labels else Resampling.average)

        atomic_write(target, write, "converted scene")
    return {"source": source, "target": target, "bytes_in": os.path.getsize(source),
            "bytes_out": os.path.getsize(target), "class_map": labels}  # fmt: skip
