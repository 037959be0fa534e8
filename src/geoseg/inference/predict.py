"""Predict whole scenes: check every input first, then stream each scene through the model to disk."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from rasterio.crs import CRS
from tqdm import tqdm

from geoseg.config import flag, whole
from geoseg.data.normalize import batch_dtype, raw_fill_values
from geoseg.data.remote import is_remote
from geoseg.data.scenes import Scene, scene_files, scene_grid
from geoseg.data.series import SeriesRead
from geoseg.data.series_scene import SeriesTileReader
from geoseg.data.stack import Grid
from geoseg.errors import GeosegError
from geoseg.inference.inputs import SeriesInput, input_georeference, input_scene
from geoseg.inference.legend import write_legend
from geoseg.inference.loaded import LoadedModel
from geoseg.inference.norm_calibration import DEFAULT_CHIP, resolve_norm_stats, scene_statistics
from geoseg.inference.polygon_units import Measure, parse_measure, unit_warning
from geoseg.inference.quicklook import quicklook_display, write_quicklook
from geoseg.inference.score_set import label_for
from geoseg.inference.scoring import ScoreOptions
from geoseg.inference.sliding import predict_blocks
from geoseg.inference.stats_check import check_statistics
from geoseg.inference.tile_source import TileSource, resolve_workers
from geoseg.inference.tiling import check_tiling, fitted_tile, plan_tiles
from geoseg.inference.vectorize import write_polygons
from geoseg.inference.writer import (
    BLOCK,
    BackgroundWriter,
    PredictionWriter,
    check_written,
    existing,
    sidecar_paths,
    to_cog,
)
from geoseg.io import atomic_paths, write_errors
from geoseg.models.norm_statistics import hold_statistics
from geoseg.output_policy import check_existing, claim_output

log = logging.getLogger(__name__)

OUTPUT_FIX = "Free disk space or set output= elsewhere."


@dataclass
class PredictOptions:
    """The ``geoseg predict`` options that shape how each scene is predicted and written."""

    tile: int = 512
    overlap: int = 64
    batch_size: int = 8
    panel: int = 2048
    tta: bool = False
    norm_stats: str = "auto"  # auto | tile | scene: GroupNorm/InstanceNorm/FRN statistics (norm_calibration)
    norm_windows: int = 64  # norm_stats=scene: at most this many training-chip-size windows per scene
    probabilities: bool = False
    cog: bool = False
    quicklook: bool = False
    quicklook_bands: list[int] | None = None
    labels: str | None = None  # labels for the quicklook's label and error panels (file, folder, template)
    label_nodata: float | None = None  # overrides the label files' nodata
    nodata: float | None = None
    check_stats: bool = True
    stats_warn: float = 0.5  # warn when a band mean is this many training stds from the training mean
    existing: str = "error"  # error | skip | overwrite
    channels_last: bool | str = False  # "auto" is resolved per model by the predict command
    vectorize: bool = False  # also write <output stem>.gpkg: the class map as polygons
    min_area: float | str = 0.0  # map units², or pixels ('20px'): smaller polygons are left out of the .gpkg
    simplify: float | str = 0.0  # map units, or pixels ('1.5px'): polygon simplification tolerance
    read_workers: int | str = "auto"  # reader threads (GDAL decodes without the GIL); auto = half the cores
    write_threads: int | str = 1  # GDAL deflate threads per output (> 1: each output is read back whole)
    deflate_level: int = 3  # 1 (fastest) .. 9 (smallest); 3 writes 4x faster than GDAL's 6, ~10% larger
    progress: bool = True


@dataclass(frozen=True)
class SceneJob:
    """One input scene checked against the checkpoint, and the files it will write."""

    scene: Scene
    outputs: dict[str, str | None]
    display: list[int] | None = None  # quicklook_bands as stack indices (None = by band name)
    labels: str | None = None  # the label file of the quicklook's label and error panels
    georef: dict[str, Any] = field(default_factory=dict)  # GCPs/RPCs of an input without a map grid

    @property
    def image(self) -> str:
        return self.scene.image

    @property
    def bands(self) -> list[int]:
        return list(self.scene.bands)


def prepare(
    loaded: LoadedModel, inputs: Sequence[str | Sequence[str]], outputs: Sequence[str], opts: PredictOptions
) -> list[SceneJob]:
    """Check options, every input scene and every output name before the first tile is computed.

    Each input is one path, or a scene's files in stack order (see :func:`find_inputs`).
    """
    check_tiling(opts.tile, opts.overlap, loaded.model.size_divisor, opts.panel, BLOCK)
    whole(vars(opts), "batch_size", 1, example=8)
    whole(vars(opts), "norm_windows", 1, example=64)
    resolve_norm_stats(opts.norm_stats, loaded)
    for key in ("tta", "probabilities", "cog", "quicklook", "vectorize", "check_stats", "progress"):
        flag(vars(opts), key)  # tta=no would be a truthy string
    if not _is_nodata(opts.nodata) and not (
        isinstance(opts.nodata, (list, tuple)) and opts.nodata and all(_is_nodata(v) for v in opts.nodata)
    ):
        raise GeosegError(f"nodata={opts.nodata!r} must be a number, a list of one number (or null) per "
                          "band, or null (the checkpoint's data.nodata, else each file's)")  # fmt: skip
    if (
        isinstance(opts.stats_warn, bool)
        or not isinstance(opts.stats_warn, (int, float))
        or opts.stats_warn <= 0
    ):
        raise GeosegError(f"stats_warn={opts.stats_warn!r} must be a positive number of training stds")
    measures = [parse_measure(key, getattr(opts, key)) for key in ("min_area", "simplify")]
    if isinstance(opts.deflate_level, bool) or opts.deflate_level not in range(1, 10):
        raise GeosegError(f"deflate_level={opts.deflate_level!r} must be a whole number from 1 to 9")
    resolve_workers(opts.read_workers, "read_workers")
    resolve_workers(opts.write_threads, "write_threads")
    check_existing(opts.existing)
    jobs, warned = [], set()
    for given, output in zip(inputs, outputs, strict=True):
        paths = [given] if isinstance(given, str) else list(given)
        outs = sidecar_paths(output, opts.probabilities, opts.quicklook, opts.vectorize)
        found = existing([path for key, path in outs.items() if key != "legend"])
        if found and opts.existing == "skip":
            log.info("skipping %s: %s exists", paths[0], found[0])
            continue
        for key, kind in OUTPUT_KINDS.items():
            if outs.get(key) is not None:
                claim_output(outs[key], kind, opts.existing, [*paths, opts.labels])
        scene = input_scene(given if isinstance(given, SeriesInput) else paths, loaded, opts.nodata)
        if opts.vectorize:
            warn_units(measures, scene_grid(scene), warned)
        if opts.check_stats:
            check_statistics(scene, loaded, warn_shift=opts.stats_warn)
        display = quicklook_display(scene, opts.quicklook_bands) if opts.quicklook else None
        labels = quicklook_labels(opts, output, len(inputs))
        jobs.append(SceneJob(scene, outs, display, labels, input_georeference(scene)))
    return jobs


def warn_units(measures: Sequence[Measure], grid: Grid, warned: set[str]) -> None:
    """Warn (once per message) about a min_area/simplify in map units that this grid's CRS makes
    unlikely to be meant (degrees taken for metres)."""
    crs = CRS.from_wkt(grid.crs) if grid.crs else None
    for measure in measures:
        message = unit_warning(measure, crs, grid.affine, grid.height, grid.width)
        if message and message not in warned:
            warned.add(message)
            log.warning("%s", message)


OUTPUT_KINDS = {"classes": "prediction", "probs": "prediction", "quicklook": "picture", "vector": "polygons"}


def quicklook_labels(opts: PredictOptions, output: str, count: int) -> str | None:
    """The label file of one output's quicklook: ``labels=`` itself for one input, else the file of
    the output's name in that folder or the template filled with its stem; checked before predicting."""
    if opts.labels is None:
        return None
    if not opts.quicklook:
        raise GeosegError("labels= is for the quicklook's label and error panels; add quicklook=true")
    if count == 1 and (os.path.isfile(opts.labels) or is_remote(opts.labels)):
        return opts.labels
    return label_for(output, opts.labels)


def predict_scene(
    loaded: LoadedModel, job: SceneJob, opts: PredictOptions, device: torch.device, amp: torch.dtype | None,
    position: str = "scene 1/1",
) -> dict[str, Any]:  # fmt: skip
    """Predict one scene into its class map (and probabilities, quicklook); returns timing numbers.

    ``position`` ("scene 3/40") leads the progress bar and the log line of a set."""
    started = time.perf_counter()
    paths, scene = job.outputs, job.scene
    keys = [k for k in ("classes", "legend", "probs", "vector") if paths.get(k) is not None]
    with atomic_paths(*[paths[k] for k in keys]) as tmp_list:
        tmps = dict(zip(keys, tmp_list, strict=True))
        tile = fitted_tile(opts.tile, scene.height, scene.width, int(loaded.model.size_divisor))
        plan = plan_tiles(scene.height, scene.width, tile, opts.overlap, opts.panel)
        fill = raw_fill_values(loaded.stats.mean, batch_dtype([scene.dtype]))
        open_reader = scene.reader
        if scene.is_series:  # each tile: dates x (bands + validity), as the model was trained
            open_reader, fill = series_tiles(scene, loaded, fill)
        norm_stats = resolve_norm_stats(opts.norm_stats, loaded)
        held = {}
        if norm_stats == "scene":  # first pass: statistics of training-chip-size windows, then held
            chip = loaded.chip_size or DEFAULT_CHIP
            batch = min(64, max(opts.batch_size, opts.batch_size * (tile // chip) ** 2))  # a batch's pixels
            held = scene_statistics(loaded.model, open_reader, (scene.height, scene.width), fill, chip,
                                    device, max_windows=opts.norm_windows, batch_size=batch, amp=amp,
                                    name=scene.name)  # fmt: skip
            norm_stats = "scene" if held else "tile"
        tags = {"geoseg_checkpoint": str(loaded.path), "geoseg_tile": f"{tile}/{opts.overlap}",
                "geoseg_tta": str(opts.tta), "geoseg_norm_stats": norm_stats}  # fmt: skip
        writing = partial(write_errors, paths["classes"], "the prediction", OUTPUT_FIX)
        with writing():
            threads = 1 if opts.write_threads == 1 else resolve_workers(opts.write_threads, "write_threads")
            writer = PredictionWriter(scene_grid(scene), loaded.classes, tmps["classes"], tmps.get("probs"),
                                      tags, threads, opts.deflate_level, job.georef)  # fmt: skip
        background = BackgroundWriter(writer.write, name="geoseg-prediction-writer")
        bar = tqdm(total=plan.num_tiles, desc=f"{position} {scene.name}", unit="tile", dynamic_ncols=True,
                   disable=not (opts.progress and sys.stderr.isatty()), leave=False)  # fmt: skip
        try:
            remote = any(is_remote(p) for p in scene_files([scene]))
            readers = resolve_workers(opts.read_workers, remote=remote)
            tiles = TileSource(open_reader, fill, plan, opts.batch_size, readers, device)
            with hold_statistics(loaded.model, held):
                for block in predict_blocks(
                    tiles, plan, loaded.model, device, len(loaded.classes.codes), block=BLOCK, amp=amp,
                    tta=opts.tta, channels_last=opts.channels_last, on_tiles=bar.update,
                    keep_probs="uint8" if "probs" in tmps else None,
                ):  # fmt: skip
                    with writing():
                        background.put(block)
            with writing():
                background.close()
        finally:
            bar.close()
            with writing():
                try:
                    background.close()
                finally:
                    writer.close()
        with writing():
            if threads > 1:
                for key in ("classes", "probs"):
                    if key in tmps:
                        check_written(tmps[key])
            write_legend(tmps["legend"], loaded.classes)
            if opts.cog:
                to_cog(tmps["classes"], "NEAREST")
                if "probs" in tmps:
                    to_cog(tmps["probs"], "AVERAGE")
        if "vector" in tmps:  # from the finished class map, before any output gets its name
            with write_errors(paths["vector"], "the polygons", OUTPUT_FIX):
                polygons = write_polygons(tmps["classes"], tmps["vector"], loaded.classes, opts.min_area,
                                          opts.simplify, rows=BLOCK, shown=paths["vector"])  # fmt: skip
                log.info("%s: %d polygons -> %s", scene.name, polygons, paths["vector"])
    pixels = scene.height * scene.width
    if paths["quicklook"] is not None:
        label_opts = ScoreOptions(label_nodata=opts.label_nodata)
        write_quicklook(scene, paths["classes"], loaded.classes, paths["quicklook"], display=job.display,
                        labels=job.labels, label_opts=label_opts)  # fmt: skip
    seconds = time.perf_counter() - started
    log.info("%s: %s -> %s: %d tile(s), %.1f MP in %.1f s (%.2f MP/s)", position, scene.name,
             paths["classes"], plan.num_tiles, pixels / 1e6, seconds, pixels / 1e6 / seconds)  # fmt: skip
    return {"image": job.image, "output": paths["classes"], "tiles": plan.num_tiles, "seconds": seconds,
            "megapixels": pixels / 1e6}  # fmt: skip


def series_tiles(
    scene: Scene, loaded: LoadedModel, fill: np.ndarray
) -> tuple[Callable[[], SeriesTileReader], np.ndarray]:
    """A series scene's tile reader factory and its fill per channel (band means, validity 0)."""
    read = SeriesRead(int(loaded.dates), loaded.series.select, training=False)
    tiled = np.tile(np.append(fill, 0).astype(fill.dtype), read.dates)

    def opener() -> SeriesTileReader:
        return SeriesTileReader(scene.date_readers(), read.dates, lambda f: read.pick(f, None), fill,
                                scene.min_valid_dates)  # fmt: skip

    return opener, tiled


def _is_nodata(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
