"""Streaming sliding-window prediction: read tiles, run the model, blend, and yield finished blocks.

:func:`predict_blocks` walks a :class:`~geoseg.inference.tiling.TilePlan` panel by panel and row by
row. Each tile's softmax output is weighted by the blending window and added to a panel
accumulator of ``tile + block`` rows; as soon as a tile row is done, the whole output blocks above
the next tile row are final and are yielded (then dropped), so memory is bounded by the tile,
block and panel sizes whatever the size of the scene. Tiles are read in a background thread while
the model runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from geoseg.data.stack_reader import StackReader
from geoseg.inference.tiling import Panel, TilePlan, aligned_rows, blend_window

Block = tuple[
    Window, np.ndarray, np.ndarray
]  # output window, (K, h, w) float32 probabilities, (h, w) invalid


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


@dataclass
class ChipReader:
    """Reads a tile's bands, fills invalid pixels with the band means and pads small scenes to a tile."""

    stack: StackReader  # the scene's selected bands on its reference grid
    fill: np.ndarray  # (C,) raw fill values in the read dtype
    plan: TilePlan

    def read(self, job: TileJob) -> tuple[np.ndarray, np.ndarray | None]:
        th, tw = self.plan.tile_shape()
        arr = np.empty((len(self.fill), th, tw), dtype=self.fill.dtype)
        invalid = self.stack.read(Window(job.col, job.row, tw, th), arr)
        if invalid is not None:
            np.copyto(arr, self.fill[:, None, None], where=invalid)
        t = self.plan.tile
        if (th, tw) != (t, t):
            padded = np.empty((arr.shape[0], t, t), dtype=arr.dtype)
            padded[...] = self.fill[:, None, None]
            padded[:, :th, :tw] = arr
            arr = padded
        return arr, invalid


def chip_batches(
    reader: ChipReader, jobs: Sequence[TileJob], batch_size: int
) -> Iterator[tuple[list[TileJob], np.ndarray, list[np.ndarray | None]]]:
    """Tiles in batches of ``batch_size``: (jobs, (B, C, tile, tile) chips, invalid masks)."""
    for start in range(0, len(jobs), batch_size):
        part = jobs[start : start + batch_size]
        chips, invalids = zip(*(reader.read(job) for job in part), strict=True)
        yield list(part), np.stack(chips), list(invalids)


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run ``items`` in a background thread, ``depth`` results ahead; its exceptions re-raise here."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as err:  # handed to the consumer
            put(err)

    thread = threading.Thread(target=work, daemon=True, name="geoseg-tile-reader")
    thread.start()
    try:
        while (item := box.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


@torch.inference_mode()
def class_probabilities(
    model: nn.Module, chips: np.ndarray, device: torch.device, amp: torch.dtype | None, tta: bool,
    channels_last: bool = False,
) -> np.ndarray:  # fmt: skip
    """(B, K, H, W) float32 softmax of the model on ``chips``, averaged over flips when ``tta``."""
    x = torch.from_numpy(chips).to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    flips: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    total = None
    for dims in flips:
        xi = x.flip(dims) if dims else x
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(xi)
        probs = logits.float().softmax(1)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return (total / len(flips)).cpu().numpy()


class PanelAccumulator:
    """Weighted probability sums for the rows of one panel not yet handed out."""

    def __init__(self, panel: Panel, plan: TilePlan, classes: int, block: int) -> None:
        self.panel, self.top = panel, 0
        self.left = panel.left
        width = min(panel.tile_cols[-1] + plan.tile, plan.width) - self.left
        rows = plan.tile + block
        self.prob = np.zeros((classes, rows, width), dtype=np.float32)
        self.weight = np.zeros((rows, width), dtype=np.float32)
        self.invalid = np.zeros((rows, width), dtype=bool)

    def add(
        self, probs: np.ndarray, weight: np.ndarray, invalid: np.ndarray | None, row: int, col: int
    ) -> None:
        """Add one tile's (K, h, w) probabilities with (h, w) weights at scene pixel (row, col)."""
        h, w = weight.shape
        r, c = row - self.top, col - self.left
        self.prob[:, r : r + h, c : c + w] += probs * weight
        self.weight[r : r + h, c : c + w] += weight
        if invalid is not None:
            self.invalid[r : r + h, c : c + w] = invalid

    def flush(self, upto: int) -> Block | None:
        """Hand out rows ``[top, upto)`` of the panel's columns as a finished block, then drop them."""
        n = upto - self.top
        if n <= 0:
            return None
        c0, c1 = self.panel.col0 - self.left, self.panel.col1 - self.left
        probs = self.prob[:, :n, c0:c1] / self.weight[:n, c0:c1]
        invalid = self.invalid[:n, c0:c1].copy()
        window = Window(self.panel.col0, self.top, self.panel.col1 - self.panel.col0, n)
        for arr in (self.prob[:], self.weight, self.invalid):
            keep = arr.shape[-2] - n
            arr[..., :keep, :] = arr[..., n:, :]
            arr[..., keep:, :] = 0
        self.top = upto
        return window, probs, invalid


def predict_blocks(
    reader: ChipReader, model: nn.Module, device: torch.device, classes: int, *, batch_size: int,
    block: int, amp: torch.dtype | None = None, tta: bool = False, channels_last: bool = False,
    on_tiles: object = None,
) -> Iterator[Block]:  # fmt: skip
    """Blended probabilities of the whole scene, as finished blocks in panel and row order.

    ``on_tiles(n)`` is called after each batch (e.g. a progress bar's ``update``).
    """
    plan = reader.plan
    th, tw = plan.tile_shape()
    weight = blend_window(plan.tile, plan.overlap)[:th, :tw]
    acc: PanelAccumulator | None = None
    for jobs, chips, invalids in prefetch(chip_batches(reader, tile_jobs(plan), batch_size)):
        probs = class_probabilities(model, chips, device, amp, tta, channels_last)
        for job, p, invalid in zip(jobs, probs, invalids, strict=True):
            if acc is None or acc.panel is not plan.panels[job.panel]:
                acc = PanelAccumulator(plan.panels[job.panel], plan, classes, block)
            acc.add(p[:, :th, :tw], weight, invalid, job.row, job.col)
            if job.ends_row:
                done = plan.height if job.next_row is None else job.next_row
                finished = acc.flush(aligned_rows(done, block, plan.height))
                if finished is not None:
                    yield finished
        if callable(on_tiles):
            on_tiles(len(jobs))
