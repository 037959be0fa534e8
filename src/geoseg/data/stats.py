"""Nodata-aware per-band statistics (float64, Chan's parallel merge) written to ``stats.json``."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window
from tqdm import tqdm

from geoseg.data.masks import image_valid
from geoseg.data.scenes import Scene, unreadable
from geoseg.errors import GeosegError
from geoseg.io import atomic_write_text

log = logging.getLogger(__name__)

PERCENTILES = (2.0, 98.0)
SAMPLE_PER_SCENE = 200_000


@dataclass
class BandStats:
    """Per-band statistics over valid pixels, tied to the band list they were computed for."""

    bands: list[int]
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    p2: list[float]
    p98: list[float]
    count: int
    scenes: list[str]
    nodata: list[float | None] = field(default_factory=list)  # per scene, as used for the statistics

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def check_matches(self, scenes: Sequence[Scene], path: str) -> None:
        """Fail when the data now selects other bands or nodata; warn when the scene files differ."""
        self.check_bands(scenes[0].bands, path)
        now = [_nodata_key(s.nodata) for s in scenes]
        if self.nodata and [_nodata_key(v) for v in self.nodata] != now:
            raise GeosegError(
                f"'{path}' was computed with image nodata {self.nodata} but the data now uses "
                f"{[s.nodata for s in scenes]}; delete it or run `geoseg stats` again."
            )
        if sorted(os.path.basename(p) for p in self.scenes) != sorted(
            os.path.basename(s.image) for s in scenes
        ):
            log.warning("'%s' was computed from other scene files than the current train split", path)

    def check_bands(self, bands: Sequence[int], path: str) -> None:
        if list(bands) != list(self.bands):
            raise GeosegError(
                f"'{path}' was computed for bands {self.bands} but the data selects {list(bands)}; "
                "delete it or run `geoseg stats` again."
            )


def _nodata_key(value: float | None) -> str:
    return "none" if value is None else repr(float(value))


class _Running:
    """Running count/mean/M2 per band, merged block by block (Chan et al.), all in float64."""

    def __init__(self, n_bands: int) -> None:
        self.n = 0
        self.mean = np.zeros(n_bands)
        self.m2 = np.zeros(n_bands)
        self.lo = np.full(n_bands, np.inf)
        self.hi = np.full(n_bands, -np.inf)

    def add(self, values: np.ndarray) -> None:
        """``values`` is (C, N) float64 of valid pixels."""
        nb = values.shape[1]
        if nb == 0:
            return
        mb = values.mean(axis=1)
        m2b = ((values - mb[:, None]) ** 2).sum(axis=1)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / n
        self.n = n
        self.lo = np.minimum(self.lo, values.min(axis=1))
        self.hi = np.maximum(self.hi, values.max(axis=1))


def region_blocks(src: rasterio.DatasetReader, bounds: tuple[int, int, int, int]) -> list[Window]:
    """The file's internal blocks clipped to (row0, col0, row1, col1), so each read is block-aligned."""
    row0, col0, row1, col1 = bounds
    out = []
    for _, block in src.block_windows(1):
        top, left = max(block.row_off, row0), max(block.col_off, col0)
        bottom = min(block.row_off + block.height, row1)
        right = min(block.col_off + block.width, col1)
        if bottom > top and right > left:
            out.append(Window(left, top, right - left, bottom - top))
    return out


def compute_stats(scenes: Sequence[Scene], progress: bool = True) -> BandStats:
    """Mean/std/min/max over valid pixels of all scenes, plus p2/p98 from a strided sample."""
    if not scenes:
        raise GeosegError("no scenes to compute statistics from; check data.root and the train split.")
    bands = list(scenes[0].bands)
    for s in scenes:
        if list(s.bands) != bands:
            raise GeosegError(f"scene '{s.image}' selects bands {list(s.bands)}, others {bands}.")
    run = _Running(len(bands))
    samples = []
    bar = progress and sys.stderr.isatty()  # no progress bar in logs and captured output
    for scene in tqdm(scenes, desc="stats", unit="scene", disable=not bar):
        row0, col0, row1, col1 = scene.bounds
        stride = max(1, ((row1 - row0) * (col1 - col0)) // SAMPLE_PER_SCENE)
        with rasterio.open(scene.image) as src:
            picked = []
            for window in region_blocks(src, scene.bounds):
                try:
                    arr = src.read(indexes=bands, window=window)
                except RasterioError:
                    raise unreadable("image", scene.image) from None
                values = arr[:, image_valid(arr, scene.nodata)].astype(np.float64)
                run.add(values)
                picked.append(values[:, ::stride])
            samples.append(np.concatenate(picked, axis=1))
    if run.n == 0 and len(scenes) == 1:
        raise GeosegError(
            f"the only scene '{scenes[0].image}' is all nodata (image nodata {scenes[0].nodata}); "
            "check data.nodata or add scenes with valid pixels."
        )
    if run.n == 0:
        raise GeosegError(
            f"every pixel of the {len(scenes)} scenes is nodata; check data.nodata and the files."
        )
    sample = np.concatenate(samples, axis=1)
    p_lo, p_hi = np.percentile(sample, PERCENTILES, axis=1)
    return BandStats(
        bands=bands,
        mean=run.mean.tolist(),
        std=np.sqrt(run.m2 / run.n).tolist(),
        min=run.lo.tolist(),
        max=run.hi.tolist(),
        p2=p_lo.tolist(),
        p98=p_hi.tolist(),
        count=int(run.n),
        scenes=[s.image for s in scenes],
        nodata=[s.nodata for s in scenes],
    )


def load_stats(path: str) -> BandStats:
    try:
        with open(path) as fh:
            return BandStats(**json.load(fh))
    except (OSError, ValueError, TypeError) as err:
        raise GeosegError(f"cannot read statistics file '{path}' ({err}); delete it to recompute.") from None


def save_stats(stats: BandStats, path: str) -> None:
    atomic_write_text(path, stats.to_json())


def load_or_compute_stats(scenes: Sequence[Scene], path: str, progress: bool = True) -> BandStats:
    """Cached statistics from ``path`` (checked against bands and nodata), computed and saved when missing."""
    if os.path.exists(path):
        stats = load_stats(path)
        stats.check_matches(scenes, path)
        return stats
    stats = compute_stats(scenes, progress=progress)
    save_stats(stats, path)
    return stats
