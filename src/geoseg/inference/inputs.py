"""What to predict and where: input files (file, glob or folder), output names, and checks of each
input against the checkpoint (band count or names, statistics) before any tile is computed."""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from geoseg.data.masks import image_valid
from geoseg.data.scenes import check_readable, open_raster, resolve_bands, unreadable
from geoseg.errors import GeosegError
from geoseg.inference.loaded import LoadedModel

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
STATS_SAMPLE = 512  # px on the long side of the decimated read that checks the statistics


def find_inputs(spec: str) -> list[str]:
    """``input=``: a raster file, a folder (its GeoTIFFs) or a glob pattern, sorted."""
    if os.path.isdir(spec):
        found = sorted(str(p) for p in Path(spec).iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        what = f"folder '{spec}' has no .tif/.tiff/.vrt files"
    elif glob.has_magic(spec):
        found = sorted(glob.glob(spec, recursive=True))
        what = f"no file matches input='{spec}'"
    else:
        found, what = [spec], ""
    if not found:
        raise GeosegError(f"{what}; check the input= path")
    return found


def output_paths(inputs: Sequence[str], output: str) -> list[str]:
    """One class-map path per input: ``output`` itself for one input named ``*.tif``, else
    ``<output>/<input stem>.tif``. Two inputs never share an output, and no output overwrites an input."""
    single = len(inputs) == 1 and output.lower().endswith((".tif", ".tiff"))
    if not single and output.lower().endswith((".tif", ".tiff")):
        raise GeosegError(
            f"output={output} is one file but input= gives {len(inputs)} scenes; pass a folder as output="
        )
    outs = [output] if single else [os.path.join(output, f"{Path(p).stem}.tif") for p in inputs]
    seen: dict[str, str] = {}
    for src, out in zip(inputs, outs, strict=True):
        key = os.path.abspath(out)
        if key in seen:
            raise GeosegError(
                f"inputs '{seen[key]}' and '{src}' would both write '{out}'; "
                "predict them into separate folders"
            )
        if key == os.path.abspath(src):
            raise GeosegError(f"output '{out}' is the input itself; choose another output=")
        seen[key] = src
    return outs


def input_bands(src: rasterio.DatasetReader, path: str, loaded: LoadedModel) -> list[int]:
    """1-based band indices of ``src`` that feed the model, checked against the checkpoint."""
    want = loaded.num_bands
    if loaded.bands is None and src.count != want:
        raise GeosegError(
            f"input '{path}' has {src.count} bands but '{loaded.path}' was trained on {want} "
            f"(all bands of its scenes); pass scenes with the same {want} bands"
        )
    try:
        bands = list(resolve_bands(src, loaded.bands, path))
    except GeosegError as err:
        raise GeosegError(f"input does not have the checkpoint's bands {loaded.bands}: {err}") from None
    if len(bands) != want:
        raise GeosegError(
            f"input '{path}': the checkpoint's bands {loaded.bands} give {len(bands)}, not {want}"
        )
    return bands


def check_statistics(
    src: rasterio.DatasetReader, bands: Sequence[int], nodata: float | None, path: str, loaded: LoadedModel,
    shift: float = 5.0, spread: float = 50.0,
) -> None:  # fmt: skip
    """Fail when a band of the scene is far from the training statistics: its mean ``shift`` training
    std or more from the training mean, or its std ``spread`` times larger or smaller.

    Either is a scaling or band-order mistake (reflectance 0-1 against 0-10000, 8-bit against 16-bit,
    RGB against BGR), not a change of landscape. The scene is read decimated (from overviews if any).
    """
    scale = max(max(src.height, src.width) / STATS_SAMPLE, 1.0)
    shape = (max(1, math.ceil(src.height / scale)), max(1, math.ceil(src.width / scale)))
    try:
        arr = src.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest)
    except RasterioError:
        raise unreadable("input", path) from None
    valid = image_valid(arr, nodata)
    if not valid.any():
        log.warning("input '%s' is all nodata; its prediction will be nodata everywhere", path)
        return
    values = arr[:, valid].astype(np.float64)
    mean, std = values.mean(axis=1), values.std(axis=1)
    train_mean, train_std = np.asarray(loaded.stats.mean), np.asarray(loaded.stats.std)
    safe_std = np.where(train_std > 0, train_std, 1.0)
    shifted = np.abs(mean - train_mean) / safe_std >= shift
    ratio = np.where(std > 0, std / safe_std, 1.0)
    spread_off = (ratio >= spread) | (ratio <= 1.0 / spread)
    off = np.flatnonzero(shifted | spread_off)
    if off.size:
        detail = ", ".join(
            f"band {bands[i]}: mean {mean[i]:.4g} std {std[i]:.3g} "
            f"vs {train_mean[i]:.4g} std {train_std[i]:.3g}"
            for i in off[:3]
        )
        raise GeosegError(
            f"input '{path}' does not look like the training data ({detail}); check its scaling and band "
            "order, or pass check_stats=false to predict anyway"
        )


def scene_nodata(src: rasterio.DatasetReader, override: float | None, loaded: LoadedModel) -> float | None:
    """``nodata=`` option, else the training config's ``data.nodata``, else the file's own."""
    for value in (override, loaded.nodata):
        if value is not None:
            return float(value)
    return src.nodata


def open_input(path: str) -> rasterio.DatasetReader:
    src = open_raster(path, "input", "the input= option")
    try:
        check_readable(src, path, "input")
    except GeosegError:
        src.close()
        raise
    if src.crs is None:
        log.warning("input '%s' has no CRS; its prediction will have none either", path)
    return src
