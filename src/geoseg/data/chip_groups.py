"""Random training chips in groups per file block (``data.chips_per_block``): the option, each
candidate's cell, and whether GDAL's block cache holds what a group reads.

A group's chips have their origins in one block of the image file and are read one after another by
one DataLoader worker, so every block they touch is decoded once, by the first chip, and found in
GDAL's block cache by the others (grouped per-chip reads measured as fast as one read of the group's
bounding window when blocks must be decoded, and faster when they are cached: BENCHMARKS.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from geoseg.data.gdal_env import gdal_defaults
from geoseg.data.scenes import Scene
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)

MAX_AUTO_CHIPS_PER_BLOCK = 4
MIN_GROUPS_PER_BATCH = 8


def chips_per_block(cfg: Mapping[str, Any]) -> int:
    """``data.chips_per_block``: random chips drawn together from one file block, read once for all.

    ``auto``: the largest divisor of the batch size that is at most 4 and leaves at least 8
    independent groups in a batch (1 below a batch of 16, 2 at 16, 4 at 32); an explicit count must
    divide ``data.batch_size``, so a group never spans two batches.
    """
    batch = int(cfg.get("batch_size", 1))
    value = cfg.get("chips_per_block", 1)
    if value == "auto":
        most = max(1, min(MAX_AUTO_CHIPS_PER_BLOCK, batch // MIN_GROUPS_PER_BATCH))
        return max(k for k in range(1, most + 1) if batch % k == 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or batch % value:
        divisors = [k for k in range(1, batch + 1) if batch % k == 0]
        raise GeosegError(
            f"data.chips_per_block must be 'auto' or a whole number that divides data.batch_size={batch} "
            f"(a group of chips shares one batch), got {value!r}; use one of {divisors}."
        )
    return value


def origin_cells(scene: Scene, size: int, origins: np.ndarray) -> np.ndarray:
    """The cell of each random-chip origin for ``data.chips_per_block``: the image file's block that
    holds it (a chip-sized cell along an axis the block spans whole, as strips do)."""
    cell, _ = _cells(scene, size)
    per_row = -(-scene.width // cell[1]) + 1
    return origins[:, 0] // cell[0] * per_row + origins[:, 1] // cell[1]


def _cells(scene: Scene, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(cell rows, cell cols) and (block rows, block cols) of ``scene`` for chips of ``size``."""
    block = scene.block or (scene.height, scene.width)
    extents = (scene.height, scene.width)
    cell = tuple(b if 1 < b < extent else size for b, extent in zip(block, extents, strict=True))
    return cell, block  # type: ignore[return-value]


def group_bytes(scene: Scene, size: int) -> int:
    """Decoded bytes of the blocks a group of chips of ``scene`` can touch (its bounding window spans
    a cell plus a chip along each axis), over the bands of its files."""
    cell, block = _cells(scene, size)
    pixels = 1
    for c, b, extent in zip(cell, block, (scene.height, scene.width), strict=True):
        span = min(extent, c + size) + (0 if c == b else b - 1)  # a chip-sized cell may start mid-block
        pixels *= min(-(-span // b), -(-extent // b)) * b
    bands = sum(len(f.bands) for f in scene.stack)
    return pixels * bands * np.dtype(scene.dtype).itemsize


def worker_cache_bytes(workers: int) -> int | None:
    """GDAL's block cache in each DataLoader worker (None when unknown: no workers, or a % setting)."""
    value = os.environ.get("GDAL_CACHEMAX")
    if value is None:
        return int(gdal_defaults(workers)["GDAL_CACHEMAX"]) if workers > 0 else None
    if not value.strip().isdigit():
        return None
    number = int(value)
    return number * 2**20 if number < 100_000 else number  # GDAL: a small number is megabytes


def check_group_cache(scenes: Sequence[Scene], size: int, group: int, workers: int) -> None:
    """Warn once when a group's blocks outgrow a worker's GDAL cache (each chip would decode them again)."""
    cache = worker_cache_bytes(workers)
    if cache is None:
        return
    for scene in scenes:
        need = group_bytes(scene, size)
        if need > cache:
            log.warning(
                "data.chips_per_block=%d: a group of %d-px chips of '%s' touches up to %d MB of decoded "
                "blocks, more than each worker's GDAL block cache (%d MB), so its blocks would be decoded "
                "again for every chip; set GDAL_CACHEMAX=%d (MB) or use fewer data.num_workers",
                group, size, scene.image, need // 2**20, cache // 2**20, 2 * need // 2**20 + 1,
            )  # fmt: skip
            return
