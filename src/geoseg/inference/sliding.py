"""Streaming sliding-window prediction: read tiles, run the model, blend, and yield finished blocks.

:func:`predict_blocks` walks a :class:`~geoseg.inference.tiling.TilePlan` panel by panel and row by
row. Tiles come from a :class:`~geoseg.inference.tile_source.TileSource` (reader threads, ordered
batches already on the model's device). Each tile's softmax output is weighted by the blending
window and added to a panel accumulator of ``tile + block`` rows on that device
(:mod:`geoseg.inference.blend`); as soon as a tile row is done, the whole output blocks above the
next tile row are final and are yielded as class indices (then dropped), so memory is bounded by the
tile, block and panel sizes whatever the size of the scene.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from geoseg.inference.blend import PanelAccumulator, PendingBlock
from geoseg.inference.tile_source import Batch
from geoseg.inference.tiling import TilePlan, aligned_rows, blend_window


@torch.inference_mode()
def class_probabilities(
    model: nn.Module, x: torch.Tensor, amp: torch.dtype | None, tta: bool, channels_last: bool = False
) -> torch.Tensor:
    """(B, K, H, W) float32 softmax of the model on the raw chips ``x``, averaged over flips when ``tta``."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    flips: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    total = None
    for dims in flips:
        xi = x.flip(dims) if dims else x
        with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(xi)
        probs = logits.float().softmax(1)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return total / len(flips) if tta else total


@torch.inference_mode()
def predict_blocks(
    batches: Iterable[Batch], plan: TilePlan, model: nn.Module, device: torch.device, classes: int, *,
    block: int, amp: torch.dtype | None = None, tta: bool = False, channels_last: bool = False,
    keep_probs: str | None = None, on_tiles: Callable[[int], object] | None = None,
) -> Iterator[PendingBlock]:  # fmt: skip
    """Blended class maps of the whole scene, as finished blocks in panel and row order (call a
    block's ``finish()`` for its classes, in another thread if the caller likes).

    ``batches`` are the plan's tiles in :func:`~geoseg.inference.tile_source.tile_jobs` order (a
    :class:`~geoseg.inference.tile_source.TileSource`); ``on_tiles(n)`` is called after each batch
    (e.g. a progress bar's ``update``).
    """
    th, tw = plan.tile_shape()
    weight = torch.from_numpy(blend_window(plan.tile, plan.overlap)[:th, :tw]).to(device)
    label_dtype = torch.uint8 if classes <= 255 else torch.int32
    acc: PanelAccumulator | None = None
    for jobs, chips, invalids in batches:
        probs = class_probabilities(model, chips, amp, tta, channels_last)
        for job, p, invalid in zip(jobs, probs, invalids, strict=True):
            if acc is None or acc.panel is not plan.panels[job.panel]:
                acc = PanelAccumulator(plan.panels[job.panel], plan, classes, block, device, label_dtype,
                                       keep_probs)  # fmt: skip
            acc.add(p[:, :th, :tw], weight, invalid, job.row, job.col)
            if job.ends_row:
                done = plan.height if job.next_row is None else job.next_row
                finished = acc.flush(aligned_rows(done, block, plan.height))
                if finished is not None:
                    yield finished
        if on_tiles is not None:
            on_tiles(len(jobs))
