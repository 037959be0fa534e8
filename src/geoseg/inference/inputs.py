"""What to predict and where: input scenes (file, glob, folder, or a ``{file}`` pattern of several
files per scene), output names, and checks of each input against the checkpoint (band count or
names, statistics) before any tile is computed."""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from collections.abc import Sequence
from typing import Any

import rasterio

from geoseg.data.band_files import FileEntry
from geoseg.data.remote import is_remote, stem
from geoseg.data.scene_paths import PLACEHOLDER, expand_pattern, glob_files
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.data.series import (
    DatePaths,
    SeriesOptions,
    find_series,
    is_series_pattern,
    keep_dates,
    series_dates,
)
from geoseg.data.series_load import series_title
from geoseg.data.series_scene import inspect_dates
from geoseg.data.stack import pixel_georeference, stack_dtype
from geoseg.errors import GeosegError
from geoseg.inference.loaded import LoadedModel

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


class SeriesInput(tuple):
    """A series input: every file of its dates (a tuple, first date first), its dates and its name."""

    dates: list[DatePaths]
    title: str

    def __new__(cls, dates: Sequence[DatePaths], title: str) -> SeriesInput:
        out = super().__new__(
            cls, [p for _, paths, mask in dates for p in (*paths, *([mask] if mask else []))]
        )
        out.dates, out.title = list(dates), title
        return out


def find_inputs(
    spec: str, files: Sequence[FileEntry] | None = None, series: SeriesOptions | None = None
) -> list[tuple[str, ...]]:
    """``input=``: a raster file, a folder (its GeoTIFFs) or a glob pattern, sorted; one tuple per scene.

    With ``files`` (the checkpoint's ``data.files``, or ``files=``) ``spec`` is a pattern with a
    ``{file}`` placeholder and each scene is its files in stack order. With ``series`` (a model
    trained on series) ``spec`` has a ``{date}`` placeholder and each scene is a :class:`SeriesInput`.
    """
    if series is not None:
        if not is_series_pattern(spec):
            raise GeosegError(
                f"the checkpoint's model takes a series of dates: give input= a pattern with a {{date}} "
                f"placeholder (e.g. scenes/T33TWM_{{date}}.tif), got '{spec}'"
            )
        first = files[0].name if files else None
        groups = find_series("", spec, files, series, "input=")
        return [SeriesInput(g, series_title(g[0][1][0], g[0][0], first)) for g in groups]
    if is_series_pattern(spec):
        raise GeosegError(
            f"input='{spec}' has a {{date}} placeholder but the checkpoint's model takes one date"
        )
    if files or PLACEHOLDER in spec:
        found = expand_pattern(spec, files, "input=")
        what = f"no scene matches input='{spec}' (with {{file}}={files[0].name if files else '?'})"
    elif is_remote(spec):  # a URL is one scene: it cannot be listed like a folder or a glob
        found, what = expand_pattern(spec, None, "input="), ""
    elif os.path.isdir(spec):
        pattern = os.path.join(glob.escape(spec), "*")
        found = [(p,) for p in glob_files(pattern, "input=", RASTER_SUFFIXES)]
        what = f"folder '{spec}' has no .tif/.tiff/.vrt files"
    elif glob.has_magic(spec):
        found = [(p,) for p in glob_files(spec, "input=")]
        what = f"no file matches input='{spec}'"
    else:
        found, what = [(spec,)], ""
    if not found:
        raise GeosegError(f"{what}; check the input= path")
    return found


def output_paths(
    inputs: Sequence[str | Sequence[str]], output: str, names: Sequence[str] | None = None
) -> list[str]:
    """One class-map path per input: ``output`` itself for one input named ``*.tif``, else
    ``<output>/<scene name>.tif`` (``names``, by default each input's stem). Two inputs never share
    an output, and no output overwrites an input."""
    scenes = [(p,) if isinstance(p, str) else tuple(p) for p in inputs]
    names = list(names) if names is not None else [stem(p[0]) for p in scenes]
    single = len(scenes) == 1 and output.lower().endswith((".tif", ".tiff"))
    if not single and output.lower().endswith((".tif", ".tiff")):
        raise GeosegError(
            f"output={output} is one file but input= gives {len(scenes)} scenes; pass a folder as output="
        )
    outs = [output] if single else [os.path.join(output, f"{n}.tif") for n in names]
    seen: dict[str, str] = {}
    for src, out in zip(scenes, outs, strict=True):
        key = os.path.abspath(out)
        if key in seen:
            raise GeosegError(
                f"inputs '{seen[key]}' and '{src[0]}' would both write '{out}'; "
                "predict them into separate folders"
            )
        if key in {os.path.abspath(p) for p in src}:
            raise GeosegError(f"output '{out}' is the input itself; choose another output=")
        seen[key] = src[0]
    return outs


def input_series(series: SeriesInput, loaded: LoadedModel, nodata: float | list | None) -> Scene:
    """The scene of a series input: its first kept date checked as an input is, the others against it."""
    opts = loaded.series
    texts = [t for t, _, _ in series.dates]
    isos = series_dates(texts, opts, "input=")
    keep = keep_dates(isos, opts, "input=")
    if not keep:
        raise GeosegError(
            f"input series '{series.title}' has no date in the checkpoint's data.series.range/months"
        )
    first = input_scene(series.dates[keep[0]][1], loaded, nodata)
    dates, dtype = inspect_dates(
        [(texts[k], isos[k], series.dates[k][1], series.dates[k][2]) for k in keep], loaded.files,
        nodata if nodata is not None else loaded.nodata, loaded.grid, first.grid, first.band_names,
        opts.mask.band, opts.mask.invalid,
    )  # fmt: skip
    dtype = stack_dtype([first.dtype, dtype])
    scene = dataclasses.replace(
        first, dates=dates, dtype=dtype, title=series.title, min_valid_dates=opts.min_valid_dates
    )
    if len(dates) != loaded.dates:
        how = "padded with empty dates" if len(dates) < loaded.dates else f"thinned by select={opts.select}"
        log.info(
            "series '%s' has %d dates, the model takes %d: %s", series.title, len(dates), loaded.dates, how
        )
    return scene


def input_scene(paths: Sequence[str], loaded: LoadedModel, nodata: float | list | None) -> Scene:
    """The scene of one input, with the checkpoint's files, grid rule, validity rule and bands, checked."""
    if isinstance(paths, SeriesInput):
        return input_series(paths, loaded, nodata)
    want = loaded.num_bands
    where = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    override = nodata if nodata is not None else loaded.nodata
    try:
        scene = inspect_scene(
            list(paths), None, bands=loaded.bands, nodata=override,
            files=loaded.files, grid=loaded.grid, invalid=loaded.invalid, require_crs=False,
            role=("input", "the input= option"),
        )  # fmt: skip
    except GeosegError as err:
        if loaded.bands is None or "data.bands" not in str(err):
            raise
        raise GeosegError(f"input does not have the checkpoint's bands {loaded.bands}: {err}") from None
    if len(scene.bands) != want:
        given = "all bands of its scenes" if loaded.bands is None else f"bands {loaded.bands}"
        raise GeosegError(
            f"input '{where}' has {len(scene.bands)} bands but '{loaded.path}' was trained on {want} "
            f"({given}); pass scenes with the same {want} bands"
        )
    return scene


def input_georeference(scene: Scene) -> dict[str, Any]:
    """``{"gcps": (points, crs)}`` or ``{"rpcs": ...}`` of an input without a map grid (a SAR or
    satellite L1 product), which its prediction is written with; empty for any other input. An input
    without a CRS is logged: what its prediction will carry, or a warning that it has no CRS."""
    if scene.grid is None or scene.grid.crs:
        return {}
    georef: dict[str, Any] = {}
    if scene.grid.affine.is_identity:  # GDAL's geotransform of a file located by GCPs or RPCs
        with rasterio.open(scene.image) as src:
            kind = pixel_georeference(src)
            georef = {"gcps": src.gcps} if kind == "GCPs" else {"rpcs": src.rpcs} if kind == "RPCs" else {}
    if not georef:
        log.warning("input '%s' has no CRS; its prediction will have none either", scene.image)
    else:
        kind = "ground control points" if "gcps" in georef else "RPCs"
        log.info("input '%s' is georeferenced by %s, not a map grid: its prediction carries the "
                 "same (vectorize=true polygons are in pixel coordinates)", scene.image, kind)  # fmt: skip
    return georef
