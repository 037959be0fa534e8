"""A fixed-size uniform sample of each band's valid pixels, for percentiles in bounded memory.

Bottom-k sampling: every pixel gets a pseudo-random key from (seed, scene, block), and a band keeps the
``k`` values with the smallest keys. The kept values are a uniform sample without replacement of all
the band's valid pixels, whatever the number or size of the scenes, in ``O(k)`` memory. Two samples
merge exactly (the ``k`` smallest keys of their union), so scenes split across worker processes or
DDP ranks give the very sample one process would have kept.
"""

from __future__ import annotations

import numpy as np

SAMPLE_SIZE = 262_144  # values kept per band (4 MiB per band with their keys)


class BandSample:
    """Per-band bottom-``k`` samples: ``add`` block by block, ``merge`` partial ones, ``percentiles``."""

    def __init__(self, n_bands: int, k: int = SAMPLE_SIZE, seed: int = 0) -> None:
        self.k, self.seed = k, seed
        self.keys = [np.empty(0) for _ in range(n_bands)]
        self.values = [np.empty(0) for _ in range(n_bands)]

    def block_keys(self, scene: int, block: int, shape: tuple[int, ...]) -> np.ndarray:
        """One block's pixel keys: the same for every band and for every way of splitting the work."""
        return np.random.default_rng([self.seed, scene, block]).random(shape)

    def add(self, band: int, values: np.ndarray, keys: np.ndarray) -> None:
        """Offer one band's valid ``values`` of a block with their ``keys`` (both 1-D, same length)."""
        if values.size == 0:
            return
        current = self.keys[band]
        if current.size >= self.k:  # only keys below the current k-th smallest can enter
            keep = keys < current.max()
            values, keys = values[keep], keys[keep]
        self.keys[band] = np.concatenate([current, keys])
        self.values[band] = np.concatenate([self.values[band], values])
        if self.keys[band].size > 2 * self.k:
            self._shrink(band)

    def merge(self, other: BandSample) -> None:
        """Fold ``other`` (same bands, k and seed) into this sample."""
        for band in range(len(self.keys)):
            self.add(band, other.values[band], other.keys[band])
            self._shrink(band)

    def _shrink(self, band: int) -> None:
        keys = self.keys[band]
        if keys.size <= self.k:
            return
        idx = np.argpartition(keys, self.k - 1)[: self.k]
        self.keys[band], self.values[band] = keys[idx], self.values[band][idx]

    def percentiles(self, q: tuple[float, ...]) -> list[tuple[float, ...]]:
        """Each band's percentiles ``q`` of its sample (NaN for a band with no valid pixel)."""
        out = []
        for band in range(len(self.keys)):
            self._shrink(band)
            values = self.values[band]
            pct = np.percentile(values, q) if values.size else np.full(len(q), np.nan)
            out.append(tuple(float(v) for v in pct))
        return out

    def size(self, band: int) -> int:
        """How many values band ``band`` keeps now."""
        return int(min(self.keys[band].size, self.k))
