"""What to predict and where: input scenes (file, glob, folder, or a ``{file}`` pattern of several
files per scene), output names, and checks of each input against the checkpoint (band count or
names, statistics) before any tile is computed."""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geoseg.data.band_files import FileEntry
from geoseg.data.scene_paths import PLACEHOLDER, expand_pattern
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.errors import GeosegError
from geoseg.inference.loaded import LoadedModel

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
STATS_SAMPLE = 512  # px on the long side of the decimated read that checks the statistics


def find_inputs(spec: str, files: Sequence[FileEntry] | None = None) -> list[tuple[str, ...]]:
    """``input=``: a raster file, a folder (its GeoTIFFs) or a glob pattern, sorted; one tuple per scene.

    With ``files`` (the checkpoint's ``data.files``, or ``files=``) ``spec`` is a pattern with a
    ``{file}`` placeholder and each scene is its files in stack order.
    """
    if files or PLACEHOLDER in spec:
        found = expand_pattern(spec, files, "input=")
        what = f"no scene matches input='{spec}' (with {{file}}={files[0].name if files else '?'})"
    elif os.path.isdir(spec):
        found = [(str(p),) for p in sorted(Path(spec).iterdir()) if p.suffix.lower() in RASTER_SUFFIXES]
        what = f"folder '{spec}' has no .tif/.tiff/.vrt files"
    elif glob.has_magic(spec):
        found = [(p,) for p in sorted(glob.glob(spec, recursive=True))]
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
    names = list(names) if names is not None else [Path(p[0]).stem for p in scenes]
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


def input_scene(paths: Sequence[str], loaded: LoadedModel, nodata: float | list | None) -> Scene:
    """The scene of one input, with the checkpoint's files, grid rule, validity rule and bands, checked."""
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
    if scene.grid is not None and not scene.grid.crs:
        log.warning("input '%s' has no CRS; its prediction will have none either", paths[0])
    return scene


def check_statistics(scene: Scene, loaded: LoadedModel, shift: float = 5.0, spread: float = 50.0) -> None:
    """Fail when a band of the scene is far from the training statistics: its mean ``shift`` training
    std or more from the training mean, or its std ``spread`` times larger or smaller.

    Either is a scaling or band-order mistake (reflectance 0-1 against 0-10000, 8-bit against 16-bit,
    RGB against BGR), not a change of landscape. The scene is read decimated (from overviews if any).
    """
    scale = max(max(scene.height, scene.width) / STATS_SAMPLE, 1.0)
    shape = (max(1, math.ceil(scene.height / scale)), max(1, math.ceil(scene.width / scale)))
    reader = scene.reader()
    try:
        arr, invalid = reader.read_decimated(shape)
    finally:
        reader.close()
    valid = np.ones(shape, dtype=bool) if invalid is None else ~invalid
    if not valid.any():
        log.warning("input '%s' is all nodata; its prediction will be nodata everywhere", scene.image)
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
            f"band {scene.bands[i]}: mean {mean[i]:.4g} std {std[i]:.3g} "
            f"vs {train_mean[i]:.4g} std {train_std[i]:.3g}"
            for i in off[:3]
        )
        raise GeosegError(
            f"input '{scene.image}' does not look like the training data ({detail}); check its scaling and "
            "band order, or pass check_stats=false to predict anyway"
        )
