"""Nodata-aware per-band statistics (float64, Chan's parallel merge) written to ``stats.json``."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from rasterio.windows import Window
from tqdm import tqdm

from geoseg.data.scenes import Scene
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

    def validate(self, path: str) -> BandStats:
        """Fail in one line when the statistics cannot normalise anything (hand-edited or damaged)."""
        n = len(self.bands)
        for key in ("mean", "std", "min", "max"):
            values = getattr(self, key)
            if not isinstance(values, list) or len(values) != n:
                got = len(values) if isinstance(values, list) else repr(values)
                raise GeosegError(
                    f"statistics '{path}': '{key}' has {got} values for {n} bands; delete it (or run "
                    "`geoseg stats`) to recompute."
                )
        mean, std = np.asarray(self.mean, dtype=np.float64), np.asarray(self.std, dtype=np.float64)
        bad = [(i, "mean", m) for i, m in enumerate(mean) if not np.isfinite(m)] + [
            (i, "std", v) for i, v in enumerate(std) if not np.isfinite(v) or v < 0
        ]
        if bad:
            i, key, value = bad[0]
            raise GeosegError(
                f"statistics '{path}': band {self.bands[i]} has {key} {value}, which cannot normalise it "
                "(a mean must be finite, a std finite and >= 0); delete it (or run `geoseg stats`) to "
                "recompute."
            )
        return self

    def check_matches(self, scenes: Sequence[Scene], path: str) -> None:
        """Fail when the data now selects other bands or nodata; warn when the scene files differ."""
        self.check_bands(scenes[0].bands, path)
        now = [_nodata_key(nodata_summary(s)) for s in scenes]
        if self.nodata and [_nodata_key(v) for v in self.nodata] != now:
            raise GeosegError(
                f"'{path}' was computed with image nodata {self.nodata} but the data now uses "
                f"{[nodata_summary(s) for s in scenes]}; delete it or run `geoseg stats` again."
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


def _nodata_key(value: float | list | None) -> str:
    if isinstance(value, list):
        return repr([_nodata_key(v) for v in value])
    return "none" if value is None else repr(float(value))


class _Running:
    """Running count/mean/M2 per band, merged block by block (Chan et al.), all in float64."""

    def __init__(self, n_bands: int) -> None:
        self.n = np.zeros(n_bands, dtype=np.int64)
        self.mean = np.zeros(n_bands)
        self.m2 = np.zeros(n_bands)
        self.lo = np.full(n_bands, np.inf)
        self.hi = np.full(n_bands, -np.inf)

    def add(self, band: int, values: np.ndarray) -> None:
        """``values`` is a 1-D float64 array of one band's valid pixels."""
        nb = values.size
        if nb == 0:
            return
        mb = values.mean()
        m2b = ((values - mb) ** 2).sum()
        n = self.n[band] + nb
        delta = mb - self.mean[band]
        self.mean[band] += delta * nb / n
        self.m2[band] += m2b + delta**2 * self.n[band] * nb / n
        self.n[band] = n
        self.lo[band] = min(self.lo[band], values.min())
        self.hi[band] = max(self.hi[band], values.max())


def region_blocks(scene: Scene) -> list[Window]:
    """The reference file's internal blocks clipped to the scene's region, so each read is block-aligned."""
    rows, cols = scene.block or (256, 256)
    row0, col0, row1, col1 = scene.bounds
    return [
        Window(c, r, min(c - c % cols + cols, col1) - c, min(r - r % rows + rows, row1) - r)
        for r in [row0, *range(row0 - row0 % rows + rows, row1, rows)]
        for c in [col0, *range(col0 - col0 % cols + cols, col1, cols)]
    ]


def band_values(arr: np.ndarray, invalid: np.ndarray | None, scene: Scene) -> list[np.ndarray]:
    """Each band's valid values as float64: valid pixels that are not that band's own nodata."""
    valid = np.ones(arr.shape[1:], dtype=bool) if invalid is None else ~invalid
    out = []
    for band, nodata in zip(arr, scene.band_nodata, strict=True):
        keep = valid if nodata is None or nodata != nodata else valid & (band != nodata)
        out.append(band[keep].astype(np.float64))
    return out


def compute_stats(scenes: Sequence[Scene], progress: bool = True) -> BandStats:
    """Mean/std/min/max over valid pixels of all scenes, plus p2/p98 from a strided sample.

    A pixel is valid by the scene's rule (``data.invalid``), and a band's own nodata value never
    enters that band's statistics.
    """
    if not scenes:
        raise GeosegError("no scenes to compute statistics from; check data.root and the train split.")
    bands = list(scenes[0].bands)
    for s in scenes:
        if list(s.bands) != bands:
            raise GeosegError(f"scene '{s.image}' selects bands {list(s.bands)}, others {bands}.")
    run = _Running(len(bands))
    samples: list[list[np.ndarray]] = [[] for _ in bands]
    count = 0
    bar = progress and sys.stderr.isatty()  # no progress bar in logs and captured output
    for scene in tqdm(scenes, desc="stats", unit="scene", disable=not bar):
        row0, col0, row1, col1 = scene.bounds
        stride = max(1, ((row1 - row0) * (col1 - col0)) // SAMPLE_PER_SCENE)
        reader = scene.reader()
        try:
            for window in region_blocks(scene):
                arr = np.empty((len(bands), int(window.height), int(window.width)), dtype=scene.dtype)
                invalid = reader.read(window, arr)
                count += arr[0].size - (0 if invalid is None else int(invalid.sum()))
                for i, values in enumerate(band_values(arr, invalid, scene)):
                    run.add(i, values)
                    samples[i].append(values[::stride])
        finally:
            reader.close()
    if count == 0 and len(scenes) == 1:
        raise GeosegError(
            f"the only scene '{scenes[0].image}' is all nodata (image nodata {scenes[0].nodata}); "
            "check data.nodata or add scenes with valid pixels."
        )
    if count == 0:
        raise GeosegError(
            f"every pixel of the {len(scenes)} scenes is nodata; check data.nodata and the files."
        )
    pct = [np.percentile(np.concatenate(s), PERCENTILES) if sum(x.size for x in s) else (np.nan, np.nan)
           for s in samples]  # fmt: skip
    n = np.maximum(run.n, 1)
    stats = BandStats(
        bands=bands,
        mean=run.mean.tolist(),
        std=np.sqrt(run.m2 / n).tolist(),
        min=run.lo.tolist(),
        max=run.hi.tolist(),
        p2=[float(p[0]) for p in pct],
        p98=[float(p[1]) for p in pct],
        count=int(count),
        scenes=[s.image for s in scenes],
        nodata=[nodata_summary(s) for s in scenes],
    )
    warn_nodata_in_statistics(stats, scenes)
    return stats


def nodata_summary(scene: Scene) -> float | list[float | None] | None:
    """A scene's nodata for stats.json: one value when its selected bands share it, else one per band."""
    values = list(scene.band_nodata)
    return values[0] if len({repr(v) for v in values}) == 1 else values


SENTINELS = (-32768.0, -9999.0, -99999.0, -3.4028234663852886e38)  # values that often mean "no data"


def warn_nodata_in_statistics(stats: BandStats, scenes: Sequence[Scene]) -> None:
    """Warn when a band's min or max is another band's nodata value, or a value that often means nodata."""
    names = scenes[0].band_names
    for i, band in enumerate(stats.bands):
        own = {repr(s.band_nodata[i]) for s in scenes}
        others = {v for s in scenes for j, v in enumerate(s.band_nodata) if j != i and v is not None}
        for what, value in (("min", stats.min[i]), ("max", stats.max[i])):
            if repr(value) in own:
                continue
            why = "the nodata value of another band" if value in others else (
                "a value that often marks missing pixels" if value in SENTINELS else None)  # fmt: skip
            if why is None:
                continue
            label = names[band - 1] if names and names[band - 1] else f"band {band}"
            log.warning(
                "band %d (%s) has %s %s, %s; if it marks missing pixels, declare it as that band's nodata "
                "(data.files[...].nodata or data.nodata) so it is excluded, then recompute the statistics",
                band, label, what, f"{value:g}", why,
            )  # fmt: skip


def load_stats(path: str) -> BandStats:
    try:
        with open(path) as fh:
            stats = BandStats(**json.load(fh))
    except (OSError, ValueError, TypeError) as err:
        raise GeosegError(f"cannot read statistics file '{path}' ({err}); delete it to recompute.") from None
    return stats.validate(path)


def save_stats(stats: BandStats, path: str) -> None:
    atomic_write_text(path, stats.to_json(), "band statistics")


def load_or_compute_stats(scenes: Sequence[Scene], path: str, progress: bool = True) -> BandStats:
    """Cached statistics from ``path`` (checked against bands and nodata), computed and saved when missing."""
    if os.path.exists(path):
        stats = load_stats(path)
        stats.check_matches(scenes, path)
        return stats
    stats = compute_stats(scenes, progress=progress)
    save_stats(stats, path)
    return stats
