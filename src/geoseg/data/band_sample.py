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
    """Per-band bottom-``k`` samples: ``add`` block by block, ``merge`` partial ones, ``percentiles``.

    Offered values are kept in chunks and cut back to the ``k`` smallest keys only when they pass
    ``2k``; after a cut only keys below the ``k``-th smallest so far can enter, so adding costs
    about one comparison per pixel.
    """

    def __init__(self, n_bands: int, k: int = SAMPLE_SIZE, seed: int = 0) -> None:
        self.k, self.seed = k, seed
        self.chunks: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(n_bands)]
        self.held = [0] * n_bands
        self.threshold = [np.inf] * n_bands  # keys at or above it can never be among the k smallest

    def block_keys(self, scene: int, block: int, shape: tuple[int, ...]) -> np.ndarray:
        """One block's pixel keys: the same for every band and for every way of splitting the work."""
        return np.random.default_rng([self.seed, scene, block]).random(shape)

    def add(self, band: int, values: np.ndarray, keys: np.ndarray) -> None:
        """Offer one band's valid ``values`` of a block with their ``keys`` (both 1-D, same length)."""
        if np.isfinite(self.threshold[band]):
            keep = keys < self.threshold[band]
            values, keys = values[keep], keys[keep]
        if values.size == 0:
            return
        self.chunks[band].append((keys, values))
        self.held[band] += values.size
        if self.held[band] > 2 * self.k:
            self._shrink(band)

    def merge(self, other: BandSample) -> None:
        """Fold ``other`` (same bands, k and seed) into this sample."""
        for band in range(len(self.chunks)):
            keys, values = other.arrays(band)
            self.add(band, values, keys)

    def arrays(self, band: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) of band ``band``: its ``k`` smallest keys at most."""
        self._shrink(band)
        if not self.chunks[band]:
            return np.empty(0), np.empty(0)
        return self.chunks[band][0]

    def _shrink(self, band: int) -> None:
        chunks = self.chunks[band]
        if len(chunks) <= 1 and self.held[band] <= self.k:
            return
        keys = np.concatenate([c[0] for c in chunks])
        values = np.concatenate([c[1] for c in chunks])
        if keys.size > self.k:
            idx = np.argpartition(keys, self.k - 1)[: self.k]
            keys, values = keys[idx], values[idx]
            self.threshold[band] = float(keys.max())
        self.chunks[band], self.held[band] = [(keys, values)], keys.size

    def percentiles(self, q: tuple[float, ...]) -> list[tuple[float, ...]]:
        """Each band's percentiles ``q`` of its sample (NaN for a band with no valid pixel)."""
        out = []
        for band in range(len(self.chunks)):
            values = self.arrays(band)[1]
            pct = np.percentile(values, q) if values.size else np.full(len(q), np.nan)
            out.append(tuple(float(v) for v in pct))
        return out

    def size(self, band: int) -> int:
        """How many values band ``band`` holds now (at most ``2k`` between cuts)."""
        return int(self.held[band])
