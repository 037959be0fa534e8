"""Chip window arithmetic: grid offsets clamped inside the scene and valid-area candidate windows."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Chip(NamedTuple):
    """A chip request: scene index, top-left pixel (row, col) and the seed for its augmentation."""

    scene: int
    row: int
    col: int
    seed: int = 0


def grid_offsets(length: int, size: int, stride: int) -> list[int]:
    """Offsets of windows of ``size`` every ``stride`` px, the last clamped so it ends at ``length``."""
    if size > length:
        raise ValueError(f"window size {size} is larger than the extent {length}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    offsets = list(range(0, length - size + 1, stride))
    if offsets[-1] != length - size:
        offsets.append(length - size)
    return offsets


def grid_windows(height: int, width: int, size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """(row, col) of a grid of ``size`` windows that covers the whole scene and never leaves it."""
    stride = size if stride is None else stride
    rows = grid_offsets(height, size, stride)
    cols = grid_offsets(width, size, stride)
    return [(r, c) for r in rows for c in cols]


def block_alignment(size: int, block: int, extent: int) -> int:
    """Lattice (px) on one axis for chip origins that touch as few of the file's blocks as possible.

    1 means no constraint: a block (strip) that spans the whole axis is read whole wherever the
    chip starts. A chip that divides the block can start at any multiple of its size (it then lies
    inside one block); any other chip starts on a block boundary.
    """
    if block >= extent or block <= 1:
        return 1
    if size <= block and block % size == 0:
        return size
    return block


def candidate_step(size: int, align: tuple[int, int] = (1, 1)) -> int:
    """Spacing of the candidate origins of random chips (and the cell of the coarse validity mask).

    With an alignment lattice (see :func:`block_alignment`) the spacing divides it, so the aligned
    origins are a subset of the candidates and keep their exact valid fraction.
    """
    return math.gcd(max(1, size // 8), *[a for a in align if a > 1])


def window_valid_fraction(coarse_valid: np.ndarray, size: int, step: int) -> np.ndarray:
    """Valid fraction of every candidate window on a lattice of ``step`` px, from a coarse valid mask.

    ``coarse_valid[i, j]`` is the valid fraction of the cell of ``step`` px at (i*step, j*step).
    Returns an array ``f[i, j]`` for the window whose origin is (i*step, j*step); windows are
    ``size`` px, i.e. ``size/step`` cells, and only origins with the window inside the scene appear.
    """
    cells = max(1, round(size / step))
    h, w = coarse_valid.shape
    if cells > h or cells > w:
        return np.zeros((0, 0))
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = np.cumsum(np.cumsum(coarse_valid, axis=0), axis=1)
    sums = (
        integral[cells:, cells:]
        - integral[:-cells, cells:]
        - integral[cells:, :-cells]
        + integral[:-cells, :-cells]
    )
    return sums / (cells * cells)


def random_candidates(
    coarse_valid: np.ndarray,
    height: int,
    width: int,
    size: int,
    max_nodata_fraction: float,
    step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Origins (N, 2) of random-chip candidates inside the scene, and their valid fraction (N,).

    ``coarse_valid`` has cells of ``step`` px (default :func:`candidate_step`). Candidates whose
    estimated nodata fraction exceeds ``max_nodata_fraction`` are dropped.
    """
    step = candidate_step(size) if step is None else step
    frac = window_valid_fraction(coarse_valid, size, step)
    rows = np.arange(frac.shape[0]) * step
    cols = np.arange(frac.shape[1]) * step
    keep_r = rows <= height - size
    keep_c = cols <= width - size
    frac = frac[np.ix_(keep_r, keep_c)]
    rr, cc = np.meshgrid(rows[keep_r], cols[keep_c], indexing="ij")
    ok = (1.0 - frac) <= max_nodata_fraction + 1e-9
    ok &= frac > 0
    return np.stack([rr[ok], cc[ok]], axis=1).astype(np.int64), frac[ok]
