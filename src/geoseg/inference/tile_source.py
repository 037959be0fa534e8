"""Tiles of a scene read by a pool of threads, delivered in plan order as (pinned) batches.

GDAL releases the GIL while it decompresses and copies, so reader threads overlap each other and
the model. Each thread opens its own :class:`~geoseg.data.stack_reader.StackReader` (a GDAL dataset
handle is not safe to share between threads) and reads its own columns of each strip, so no block
is decoded twice. Strips are read two ahead and tiles delivered in plan order, so the output never
depends on the number of readers. On CUDA the batches land in a small ring of page-locked buffers,
so the host-to-device copy is asynchronous.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.data.stack_reader import StackReader
from geoseg.errors import GeosegError
from geoseg.inference.tiling import TilePlan


@dataclass(frozen=True)
class TileJob:
    """One tile: its panel, its top-left pixel and whether it completes its tile row in the panel."""

    panel: int
    row: int
    col: int
    ends_row: bool  # the last tile of its row in this panel
    next_row: int | None  # start of the next tile row; None in the last row


def tile_jobs(plan: TilePlan) -> list[TileJob]:
    """Every tile of the plan in processing order: panels left to right, rows top to bottom."""
    jobs = []
    for p, panel in enumerate(plan.panels):
        for i, row in enumerate(plan.rows):
            nxt = plan.rows[i + 1] if i + 1 < len(plan.rows) else None
            jobs += [TileJob(p, row, col, col == panel.tile_cols[-1], nxt) for col in panel.tile_cols]
    return jobs


def resolve_workers(value: int | str, option: str = "read_workers", remote: bool = False) -> int:
    """``auto``: half the cores this process may use (2 to 8), or 8 for a ``remote`` scene (its reader
    threads mostly wait on the network); else a whole number >= 1."""
    if value == "auto" and remote:
        return 8
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(2, min(8, cores // 2))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GeosegError(f"{option}={value!r} must be a whole number >= 1 or auto")
    return value


Batch = tuple[list[TileJob], torch.Tensor, list[np.ndarray | None]]  # jobs, (B, C, t, t) on device, masks


class TileSource:
    """A scene's tiles as batches on ``device``, in ``jobs`` order, read ``workers`` threads wide.

    Each tile row of a panel is read once as a strip (the rows of its tiles across the panel's tile
    columns) and the tiles are cut from it, so a block that two overlapping tiles share is decoded
    once. A strip is split into column chunks on the file's block grid; thread ``k`` always reads the
    same columns with its own dataset handle, so the rows that consecutive strips share come from
    that handle's block cache. Invalid pixels are filled with ``fill`` (the band means) and tiles of
    a scene smaller than one tile are padded with it.
    """

    def __init__(self, open_stack: Callable[[], StackReader], fill: np.ndarray, plan: TilePlan,
                 batch_size: int, workers: int, device: torch.device, align: int = 256) -> None:  # fmt: skip
        self.open_stack, self.fill, self.plan = open_stack, fill, plan
        self.batch_size, self.workers, self.device = batch_size, workers, device
        blocks = -(-plan.width // align)
        cuts = [min(plan.width, align * (blocks * k // workers)) for k in range(workers + 1)]
        self.columns = list(itertools.pairwise(cuts))  # thread k reads scene columns [a, b)
        self.jobs = tile_jobs(plan)

    def _strips(self) -> list[tuple[int, int, int, list[TileJob]]]:
        """(row, col0, col1, jobs) of each strip: one tile row of one panel, in job order."""
        tw = self.plan.tile_shape()[1]
        strips = []
        for (_, row), group in itertools.groupby(self.jobs, key=lambda j: (j.panel, j.row)):
            jobs = list(group)
            strips.append((row, jobs[0].col, jobs[-1].col + tw, jobs))
        return strips

    def _read_chunk(self, k: int, stacks: list, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """Thread ``k``: its columns of one strip with its own handle (opened on first use)."""
        if stacks[k] is None:
            stacks[k] = self.open_stack()
        out = np.empty((len(self.fill), window.height, window.width), dtype=self.fill.dtype)
        return out, stacks[k].read(window, out)

    def _read_strip(self, pools: list[ThreadPoolExecutor], stacks: list, row: int, col0: int,
                    col1: int) -> list[tuple[int, int, Future]]:  # fmt: skip
        """Submit the column chunks of the strip ``[row, row + th) x [col0, col1)``."""
        th = self.plan.tile_shape()[0]
        parts = []
        for k, (a, b) in enumerate(self.columns):
            a, b = max(a, col0), min(b, col1)
            if a < b:
                future = pools[k].submit(self._read_chunk, k, stacks, Window(a, row, b - a, th))
                parts.append((a - col0, b - col0, future))
        return parts

    def __iter__(self) -> Iterator[Batch]:
        th, tw = self.plan.tile_shape()
        pools = [
            ThreadPoolExecutor(1, thread_name_prefix=f"geoseg-tile-reader-{k}") for k in range(self.workers)
        ]
        stacks: list[StackReader | None] = [None] * self.workers
        strips = self._strips()
        ring = _BufferRing(self.device)
        pending: deque = deque()
        tiles: list[tuple[TileJob, np.ndarray, np.ndarray | None]] = []
        try:
            for n, (_, col0, col1, jobs) in enumerate(strips):
                while len(pending) < 2 and n + len(pending) < len(strips):
                    nxt = strips[n + len(pending)]
                    pending.append(self._read_strip(pools, stacks, *nxt[:3]))
                strip = np.empty((len(self.fill), th, col1 - col0), dtype=self.fill.dtype)
                invalid = None
                for a, b, future in pending.popleft():
                    strip[:, :, a:b], mask = future.result()
                    if mask is not None:
                        invalid = np.zeros((th, col1 - col0), dtype=bool) if invalid is None else invalid
                        invalid[:, a:b] = mask
                if invalid is not None:
                    np.copyto(strip, self.fill[:, None, None], where=invalid)
                for job in jobs:
                    c = job.col - col0
                    tile = self._pad(strip[:, :, c : c + tw])
                    tiles.append((job, tile, None if invalid is None else invalid[:, c : c + tw]))
                    if len(tiles) == self.batch_size:
                        yield self._batch(ring, tiles)
                        tiles = []
            if tiles:
                yield self._batch(ring, tiles)
        finally:
            for pool in pools:
                pool.shutdown(wait=True, cancel_futures=True)
            for stack in stacks:
                if stack is not None:
                    stack.close()

    def _pad(self, tile: np.ndarray) -> np.ndarray:
        t = self.plan.tile
        if tile.shape[1:] == (t, t):
            return tile
        padded = np.empty((tile.shape[0], t, t), dtype=tile.dtype)
        padded[...] = self.fill[:, None, None]
        padded[:, : tile.shape[1], : tile.shape[2]] = tile
        return padded

    def _batch(self, ring: _BufferRing, tiles: list) -> Batch:
        return [j for j, _, _ in tiles], ring.to_device([t for _, t, _ in tiles]), [m for _, _, m in tiles]


class _BufferRing:
    """Host batch buffers used in turn; on CUDA they are pinned and copied asynchronously.

    A pinned buffer is refilled only after its previous copy to the device has finished.
    """

    def __init__(self, device: torch.device, size: int = 3) -> None:
        self.device, self.pin = device, device.type == "cuda"
        self.buffers: list[torch.Tensor | None] = [None] * size
        self.copied: list[torch.cuda.Event | None] = [None] * size
        self.turn = 0

    def to_device(self, tiles: Sequence[np.ndarray]) -> torch.Tensor:
        k, self.turn = self.turn, (self.turn + 1) % len(self.buffers)
        shape = (len(tiles), *tiles[0].shape)
        dtype = torch.from_numpy(tiles[0][:0]).dtype
        buf = self.buffers[k]
        if buf is None or buf.dtype != dtype or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = self.buffers[k] = torch.empty(shape, dtype=dtype, pin_memory=self.pin)
        elif (event := self.copied[k]) is not None:
            event.synchronize()
        host = buf[: shape[0]]
        np.stack(tiles, out=host.numpy())
        if not self.pin:
            return host.to(self.device)
        chips = host.to(self.device, non_blocking=True)
        self.copied[k] = torch.cuda.Event()
        self.copied[k].record()
        return chips
