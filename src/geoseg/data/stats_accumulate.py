"""Band statistics over many scenes in bounded memory: running moments plus a fixed-size band sample.

One :class:`StatsAccumulator` reads scenes block by block (each block aligned to the reference
file's tiles) and keeps, per band, the count, mean and M2 (Chan et al.'s parallel merge, float64),
min, max and a bottom-k sample for the percentiles. Its memory does not grow with the number or
size of the scenes. Accumulators of disjoint scene shards merge into the one a single pass would
give (``workers=`` processes here, the same merge for DDP ranks).
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from rasterio.windows import Window
from tqdm import tqdm

from geoseg.data.band_sample import SAMPLE_SIZE, BandSample
from geoseg.data.scenes import Scene


class StatsAccumulator:
    """Count/mean/M2/min/max and a band sample per band, merged block by block."""

    def __init__(self, n_bands: int, sample_size: int = SAMPLE_SIZE, fraction: float = 1.0) -> None:
        self.n = np.zeros(n_bands, dtype=np.int64)
        self.mean = np.zeros(n_bands)
        self.m2 = np.zeros(n_bands)
        self.lo = np.full(n_bands, np.inf)
        self.hi = np.full(n_bands, -np.inf)
        self.sample = BandSample(n_bands, sample_size)
        self.count = 0  # valid pixels (by the scene's rule), all bands together
        self.fraction = fraction  # of the blocks read (``sample=``); each is drawn on its own
        self.blocks: list[tuple[np.ndarray, np.ndarray]] = []  # (count, mean) per band of each block read
        self.total_blocks = 0

    def add(self, band: int, values: np.ndarray) -> None:
        """Fold one band's valid values (1-D float64) into its moments."""
        if values.size == 0:
            return
        mb = values.mean()
        self._merge_moments(band, values.size, mb, ((values - mb) ** 2).sum())
        self.lo[band] = min(self.lo[band], values.min())
        self.hi[band] = max(self.hi[band], values.max())

    def _merge_moments(self, band: int, nb: int, mb: float, m2b: float) -> None:
        if nb == 0:
            return
        n = self.n[band] + nb
        delta = mb - self.mean[band]
        self.mean[band] += delta * nb / n
        self.m2[band] += m2b + delta**2 * self.n[band] * nb / n
        self.n[band] = n

    def add_scene(self, scene: Scene, index: int) -> None:
        """Read ``scene`` (the ``index``-th of the whole list: it seeds the sample keys) block by block."""
        reader = scene.reader()
        try:
            for b, window in enumerate(region_blocks(scene)):
                self.total_blocks += 1
                if self.fraction < 1 and np.random.default_rng([1, index, b]).random() >= self.fraction:
                    continue
                arr = np.empty((len(scene.bands), int(window.height), int(window.width)), dtype=scene.dtype)
                invalid = reader.read(window, arr)
                self.count += arr[0].size - (0 if invalid is None else int(invalid.sum()))
                keys = self.sample.block_keys(index, b, arr.shape[1:])
                counts, means = np.zeros(len(self.n)), np.zeros(len(self.n))
                for i, keep in enumerate(band_valid(arr, invalid, scene)):
                    values = arr[i][keep].astype(np.float64)
                    self.add(i, values)
                    self.sample.add(i, values, keys[keep])
                    counts[i], means[i] = values.size, values.mean() if values.size else 0.0
                if self.fraction < 1:
                    self.blocks.append((counts, means))
        finally:
            reader.close()

    def merge(self, other: StatsAccumulator) -> None:
        """Fold the accumulator of another, disjoint set of scenes into this one."""
        for band in range(len(self.n)):
            self._merge_moments(band, int(other.n[band]), float(other.mean[band]), float(other.m2[band]))
        self.lo, self.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        self.sample.merge(other.sample)
        self.count += other.count
        self.blocks += other.blocks
        self.total_blocks += other.total_blocks

    def mean_se(self) -> np.ndarray:
        """Standard error of each band's mean when only a ``fraction`` of the blocks was read (0 when
        all were): the blocks are the sampled clusters, with the finite-population correction."""
        if self.fraction >= 1 or len(self.blocks) < 2:
            return np.zeros(len(self.n))
        counts = np.stack([c for c, _ in self.blocks])
        means = np.stack([m for _, m in self.blocks])
        b = len(self.blocks)
        share = counts / np.maximum(counts.sum(axis=0), 1)  # each block's weight in the mean
        var = b / (b - 1) * (share**2 * (means - self.mean) ** 2).sum(axis=0)
        return np.sqrt(var * max(0.0, 1 - b / max(self.total_blocks, 1)))

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.n, 1))


def region_blocks(scene: Scene) -> list[Window]:
    """The reference file's internal blocks clipped to the scene's region, so each read is block-aligned."""
    rows, cols = scene.block or (256, 256)
    row0, col0, row1, col1 = scene.bounds
    return [
        Window(c, r, min(c - c % cols + cols, col1) - c, min(r - r % rows + rows, row1) - r)
        for r in [row0, *range(row0 - row0 % rows + rows, row1, rows)]
        for c in [col0, *range(col0 - col0 % cols + cols, col1, cols)]
    ]


def band_valid(arr: np.ndarray, invalid: np.ndarray | None, scene: Scene) -> list[np.ndarray]:
    """Each band's valid pixels: valid by the scene's rule and not that band's own nodata value."""
    valid = np.ones(arr.shape[1:], dtype=bool) if invalid is None else ~invalid
    return [valid if nodata is None or nodata != nodata else valid & (band != nodata)
            for band, nodata in zip(arr, scene.band_nodata, strict=True)]  # fmt: skip


def _shard(
    scenes: Sequence[Scene], indices: Sequence[int], sample_size: int, fraction: float = 1.0
) -> StatsAccumulator:
    acc = StatsAccumulator(len(scenes[0].bands), sample_size, fraction)
    for scene, index in zip(scenes, indices, strict=True):
        acc.add_scene(scene, index)
    return acc


def accumulate(
    scenes: Sequence[Scene], progress: bool = True, workers: int = 1, sample_size: int = SAMPLE_SIZE,
    fraction: float = 1.0,
) -> StatsAccumulator:  # fmt: skip
    """Statistics of ``scenes`` (a random ``fraction`` of their blocks), read by ``workers`` processes
    (each a contiguous shard), merged."""
    bar = tqdm(total=len(scenes), desc="stats", unit="scene", disable=not (progress and sys.stderr.isatty()))
    try:
        if workers <= 1 or len(scenes) < 2:
            acc = StatsAccumulator(len(scenes[0].bands), sample_size, fraction)
            for index, scene in enumerate(scenes):
                acc.add_scene(scene, index)
                bar.update()
            return acc
        chunk = max(1, min(64, -(-len(scenes) // (4 * workers))))
        starts = range(0, len(scenes), chunk)
        context = multiprocessing.get_context("spawn")  # GDAL's thread pool does not survive fork
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_shard, scenes[s : s + chunk], range(s, min(s + chunk, len(scenes))),
                                   sample_size, fraction) for s in starts]  # fmt: skip
            acc = StatsAccumulator(len(scenes[0].bands), sample_size, fraction)
            for future in futures:  # in order: the result does not depend on which worker finished first
                acc.merge(future.result())
                bar.update(min(chunk, len(scenes) - bar.n))
        return acc
    finally:
        bar.close()


def accumulate_sharded(scenes: Sequence[Scene], rank: int, world_size: int) -> StatsAccumulator:
    """This rank's contiguous shard of ``scenes``, merged with every other rank's (a collective call)."""
    import torch.distributed as dist

    lo, hi = rank * len(scenes) // world_size, (rank + 1) * len(scenes) // world_size
    part = (
        _shard(scenes[lo:hi], range(lo, hi), SAMPLE_SIZE)
        if hi > lo
        else StatsAccumulator(len(scenes[0].bands))
    )
    parts: list[StatsAccumulator | None] = [None] * world_size
    dist.all_gather_object(parts, part)
    acc = StatsAccumulator(len(scenes[0].bands))
    for other in parts:  # in rank order on every rank: the same result everywhere
        acc.merge(other)
    return acc
