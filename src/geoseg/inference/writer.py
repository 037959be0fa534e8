"""Prediction GeoTIFFs: a class map (and optional uint8 probabilities) written block by block.

Both are tiled, deflate-compressed GeoTIFFs on the input's grid (CRS, transform, size). With
``cog=True`` the finished GeoTIFF is copied by GDAL's COG driver, with overviews (nearest for
classes, average for probabilities). The class map carries a colour table and a ``geoseg_classes``
tag (codes, names and colours) that ``geoseg evaluate`` reads back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from geoseg.data.stack import Grid
from geoseg.inference.loaded import ClassInfo

CLASSES_TAG = "geoseg_classes"
BLOCK = 256  # px, output GeoTIFF tile size; writes are aligned to it


def class_dtype(num_classes: int) -> tuple[str, int]:
    """uint8 with nodata 255 for up to 255 classes, else uint16 with nodata 65535."""
    return ("uint8", 255) if num_classes <= 255 else ("uint16", 65535)


def base_profile(grid: Grid) -> dict[str, Any]:
    """A tiled, compressed GeoTIFF profile on ``grid`` (the scene's reference grid)."""
    return {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "crs": grid.rio_crs,
        "transform": grid.affine, "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK,
        "compress": "deflate", "BIGTIFF": "IF_SAFER",
    }  # fmt: skip


class PredictionWriter:
    """Open temporary class-map (and probability) files; :meth:`write` takes one finished block."""

    def __init__(
        self, grid: Grid, classes: ClassInfo, class_path: str, prob_path: str | None,
        tags: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        dtype, self.nodata = class_dtype(len(classes.codes))
        profile = base_profile(grid)
        self.classes = rasterio.open(class_path, "w", **profile, count=1, dtype=dtype, nodata=self.nodata)
        self.classes.set_band_description(1, "class")
        self.classes.update_tags(**(tags or {}), **{CLASSES_TAG: json.dumps(classes.as_list())})
        if dtype == "uint8":
            self.classes.write_colormap(1, {i: (*rgb, 255) for i, rgb in enumerate(classes.colors)})
        self.probs = None
        if prob_path is not None:
            self.probs = rasterio.open(prob_path, "w", **profile, count=len(classes.codes), dtype="uint8")
            for band, name in enumerate(classes.names, start=1):
                self.probs.set_band_description(band, f"p_{name}")
            self.probs.update_tags(scale="probability x 255", **{CLASSES_TAG: json.dumps(classes.as_list())})

    def write(self, window: Window, probs: np.ndarray, invalid: np.ndarray) -> None:
        """Write (K, h, w) probabilities as classes (nodata where ``invalid``) and, if kept, as uint8."""
        labels = probs.argmax(0).astype(self.classes.dtypes[0])
        labels[invalid] = self.nodata
        self.classes.write(labels, 1, window=window)
        if self.probs is not None:
            q = np.rint(probs * 255.0).astype(np.uint8)
            q[:, invalid] = 0
            self.probs.write(q, window=window)
            self.probs.write_mask(np.where(invalid, 0, 255).astype(np.uint8), window=window)

    def close(self) -> None:
        for dst in (self.classes, self.probs):
            if dst is not None and not dst.closed:
                dst.close()


def to_cog(path: str, resampling: str) -> None:
    """Rewrite the GeoTIFF at ``path`` in place as a Cloud-Optimized GeoTIFF with overviews."""
    tmp = f"{path}.cog"
    try:
        rasterio.shutil.copy(
            path, tmp, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512, OVERVIEW_RESAMPLING=resampling,
            BIGTIFF="IF_SAFER",
        )  # fmt: skip
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_classes_tag(src: rasterio.DatasetReader) -> ClassInfo | None:
    """The class list a geoseg prediction carries, or None for other rasters."""
    text = src.tags().get(CLASSES_TAG)
    return None if text is None else ClassInfo.from_config(json.loads(text))


def sidecar_paths(
    output: str, probabilities: bool, quicklook: bool, vectorize: bool = False
) -> dict[str, str | None]:
    """``out.tif`` -> ``out_probs.tif``, ``out_quicklook.png`` and ``out.gpkg`` next to it, when asked for."""
    stem = os.path.splitext(output)[0]
    return {
        "classes": output,
        "probs": f"{stem}_probs.tif" if probabilities else None,
        "quicklook": f"{stem}_quicklook.png" if quicklook else None,
        "vector": f"{stem}.gpkg" if vectorize else None,
    }


def existing(paths: Sequence[str | None]) -> list[str]:
    return [p for p in paths if p is not None and os.path.exists(p)]
