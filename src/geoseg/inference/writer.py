"""Prediction GeoTIFFs: a class map (and optional uint8 probabilities) written block by block.

Both are tiled, deflate-compressed GeoTIFFs on the input's grid (CRS, transform, size), compressed
in a background thread (:class:`BackgroundWriter`), so the model never waits for deflate, and
optionally by several GDAL threads (``NUM_THREADS``; such a file is read back whole before it gets
its name, see :func:`check_written`). With ``cog=True`` the finished
GeoTIFF is copied by GDAL's COG driver, with overviews (nearest for classes, average for
probabilities). The class map carries a colour table and a ``geoseg_classes`` tag (codes, names and
colours) that ``geoseg evaluate`` reads back; its legend for GIS software is written beside it by
:mod:`geoseg.inference.legend`. The probabilities are grey bands (``PHOTOMETRIC=MINISBLACK``), one
per class, named ``p_<class>``: never RGB(A), which GIS software would draw as colour and alpha. Both
carry a ``geoseg_raster`` tag (``class_map`` | ``probabilities``), so ``geoseg evaluate`` refuses to
score probabilities as class indices (see :mod:`geoseg.data.raster_kind`).
"""

from __future__ import annotations

import errno
import json
import os
import queue
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil

from geoseg.classes import ClassInfo
from geoseg.data.raster_kind import CLASS_MAP, KIND_TAG, PROBABILITIES, PROBABILITY_SCALE
from geoseg.data.stack import Grid
from geoseg.errors import first_line
from geoseg.inference.blend import FinishedBlock, PendingBlock
from geoseg.inference.legend import legend_path
from geoseg.output_policy import CLASSES_TAG

BLOCK = 256  # px, output GeoTIFF tile size; writes are aligned to it


def class_dtype(num_classes: int) -> tuple[str, int]:
    """uint8 with nodata 255 for up to 255 classes, else uint16 with nodata 65535."""
    return ("uint8", 255) if num_classes <= 255 else ("uint16", 65535)


def base_profile(grid: Grid, threads: int = 1, level: int = 6) -> dict[str, Any]:
    """A tiled GeoTIFF profile on ``grid`` (the scene's reference grid), deflated at ``level`` by
    ``threads`` GDAL threads. A grid without CRS and geotransform (pixel space) writes neither."""
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "tiled": True, "blockxsize": BLOCK,
        "blockysize": BLOCK, "compress": "deflate", "zlevel": level, "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": str(threads),
    }  # fmt: skip
    if grid.crs or not grid.affine.is_identity:
        profile.update(crs=grid.rio_crs, transform=grid.affine)
    return profile


def open_output(path: str, profile: dict[str, Any], georef: Mapping[str, Any], **kwargs: Any) -> Any:
    """``rasterio.open(path, "w")`` carrying ``georef``: the input's ground control points (``gcps``:
    points and their CRS) or ``rpcs`` when it has no map grid, so the output overlays it in a GIS."""
    with warnings.catch_warnings():  # pixel space until the GCPs/RPCs are set; the caller has said so
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", **profile, **kwargs)
    if georef.get("gcps"):
        dst.gcps = georef["gcps"]
    if georef.get("rpcs") is not None:
        dst.rpcs = georef["rpcs"]
    return dst


class PredictionWriter:
    """Open temporary class-map (and probability) files; :meth:`write` takes one finished block."""

    def __init__(
        self, grid: Grid, classes: ClassInfo, class_path: str, prob_path: str | None,
        tags: dict[str, str] | None = None, threads: int = 1, level: int = 6,
        georef: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        dtype, self.nodata = class_dtype(len(classes.codes))
        profile, georef = base_profile(grid, threads, level), georef or {}
        self.classes = open_output(class_path, profile, georef, count=1, dtype=dtype, nodata=self.nodata)
        self.classes.set_band_description(1, "class")
        listed = json.dumps(classes.as_list())
        self.classes.update_tags(**(tags or {}), **{CLASSES_TAG: listed, KIND_TAG: CLASS_MAP})
        if dtype == "uint8":
            self.classes.write_colormap(1, {i: (*rgb, 255) for i, rgb in enumerate(classes.colors)})
        self.probs = None
        if prob_path is not None:
            self.probs = open_output(prob_path, profile, georef, count=len(classes.codes), dtype="uint8",
                                     photometric="MINISBLACK")  # fmt: skip
            for band, name in enumerate(classes.names, start=1):
                self.probs.set_band_description(band, f"p_{name}")
            self.probs.update_tags(scale=PROBABILITY_SCALE, **{CLASSES_TAG: listed, KIND_TAG: PROBABILITIES})

    def write(self, block: FinishedBlock | PendingBlock) -> None:
        """Write a block's classes (nodata where invalid) and, when kept, its uint8 probabilities."""
        if isinstance(block, PendingBlock):
            block = block.finish()
        invalid, window = block.invalid, block.window
        labels = block.labels.astype(self.classes.dtypes[0], copy=False)
        labels[invalid] = self.nodata
        self.classes.write(labels, 1, window=window)
        if self.probs is not None and block.probs is not None:
            q = block.probs
            q[:, invalid] = 0
            self.probs.write(q, window=window)
            self.probs.write_mask(np.where(invalid, 0, 255).astype(np.uint8), window=window)

    def close(self) -> None:
        for dst in (self.classes, self.probs):
            if dst is not None and not dst.closed:
                dst.close()


class BackgroundWriter:
    """Run ``write`` on each item in a thread, a few items behind the caller; its errors re-raise here.

    :meth:`put` blocks while ``depth`` items wait; :meth:`close` waits for the rest. An error in the
    thread stops it, and the next :meth:`put` or :meth:`close` raises it in the caller's thread.
    """

    def __init__(self, write: Callable[[Any], None], depth: int = 4, name: str = "geoseg-writer") -> None:
        self.write, self.error = write, None
        self.items: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not None:
            if self.error is None:
                try:
                    self.write(item)
                except BaseException as err:  # handed to the caller
                    self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def put(self, item: Any) -> None:
        self._raise()
        self.items.put(item)

    def close(self) -> None:
        """Wait for every queued item to be written, then raise the thread's error if it had one."""
        if self.thread.is_alive():
            self.items.put(None)
            self.thread.join()
        self._raise()


def check_written(path: str) -> None:
    """Read every block of ``path`` back; an :class:`OSError` if GDAL cannot.

    GDAL's compression threads (``NUM_THREADS`` > 1) report a failed write (disk full, file size
    limit) to GDAL's log only, never to the caller, so a file written with them is read back whole
    before it gets its name: a truncated prediction is never left looking like a finished one.
    """
    try:
        with rasterio.open(path) as src:
            for _, window in src.block_windows(1):
                src.read(window=window)
    except rasterio.errors.RasterioError as err:
        raise OSError(errno.EIO, f"the written file cannot be read back ({first_line(err)})") from None


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
    """``out.tif`` -> ``out_probs.tif``, ``out_quicklook.png`` and ``out.gpkg`` next to it, when asked for,
    and always the legend ``out.tif.aux.xml``."""
    stem = os.path.splitext(output)[0]
    return {
        "classes": output,
        "legend": legend_path(output),
        "probs": f"{stem}_probs.tif" if probabilities else None,
        "quicklook": f"{stem}_quicklook.png" if quicklook else None,
        "vector": f"{stem}.gpkg" if vectorize else None,
    }


def existing(paths: Sequence[str | None]) -> list[str]:
    return [p for p in paths if p is not None and os.path.exists(p)]
