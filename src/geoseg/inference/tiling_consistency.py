"""How much a class map depends on the tiling: a scene predicted in memory at several tile sizes and
overlaps, and the measures that compare them.

- :func:`predict_map`: the blended class map of a (small) scene in memory, exactly as ``geoseg
  predict`` computes it, with the norm statistics of the tile or held from the scene;
- :func:`change_rate`: the share of valid pixels whose class differs between two maps;
- :func:`edge_band`: the pixels within ``width`` px of a tiling's inner tile edges;
- :func:`seam_score`: the change rate in that band divided by the change rate elsewhere (1 = changes
  do not gather at tile edges; 5 = five times as likely there);
- :func:`region_labels` / :func:`region_miou`: the labels of a scene's split region and a map's mIoU
  against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.scenes import Scene
from geoseg.inference.sliding import predict_blocks
from geoseg.inference.tile_source import TileSource
from geoseg.inference.tiling import TilePlan, fitted_tile, plan_tiles
from geoseg.inference.writer import BLOCK
from geoseg.models.norm_statistics import LayerStatistics, hold_statistics


class WindowReader:
    """A scene reader shifted to start at ``(row0, col0)``: a crop of the scene read as a scene of its own."""

    def __init__(self, reader: Any, row0: int, col0: int) -> None:
        self.reader, self.row0, self.col0 = reader, row0, col0

    def read(self, window: Window, out: np.ndarray) -> np.ndarray | None:
        shifted = Window(window.col_off + self.col0, window.row_off + self.row0, window.width, window.height)
        return self.reader.read(shifted, out)

    def close(self) -> None:
        self.reader.close()


def predict_map(
    model: nn.Module, open_reader: Callable[[], Any], shape: tuple[int, int], fill: np.ndarray, classes: int,
    tile: int, overlap: int, device: torch.device, *, held: dict[str, LayerStatistics] | None = None,
    pooled: bool = False, batch_size: int = 8, amp: torch.dtype | None = None,
) -> np.ndarray:  # fmt: skip
    """(H, W) class indices of the ``shape`` scene ``open_reader()`` reads (raw bands, invalid pixels
    filled with ``fill``) at ``tile``/``overlap`` (:func:`fitted_tile` to a smaller scene), exactly as
    ``geoseg predict`` blends them, with the norm statistics ``held`` if given; 255 where no input pixel
    is valid."""
    height, width = shape
    tile = fitted_tile(tile, height, width, int(getattr(model, "size_divisor", 32)))
    panel = -(-max(tile, width) // BLOCK) * BLOCK
    plan = plan_tiles(height, width, tile, overlap, panel)
    tiles = TileSource(open_reader, fill, plan, batch_size, 1, device)
    out = np.full((height, width), 255, dtype=np.uint8)
    with hold_statistics(model, held or {}, pooled):
        for pending in predict_blocks(tiles, plan, model, device, classes, block=BLOCK, amp=amp):
            block = pending.finish()
            w = block.window
            rows, cols = slice(w.row_off, w.row_off + w.height), slice(w.col_off, w.col_off + w.width)
            out[rows, cols] = np.where(block.invalid, 255, block.labels)
    return out


def region_labels(scene: Scene, codes: list[int], window: Window | None = None) -> np.ndarray:
    """Class indices of the scene's label on its grid (in ``window``, default the whole scene), 255 where
    unlabelled or outside the scene's split region (the val strip of a scene split by region)."""
    src, reader = open_label_on_grid(scene, codes)
    try:
        labels = ClassMap(codes)(reader.read(1, window=window))
    finally:
        for handle in {id(src): src, id(reader): reader}.values():
            if hasattr(handle, "close"):
                handle.close()
    if scene.region is not None:
        row0, col0 = (0, 0) if window is None else (int(window.row_off), int(window.col_off))
        r0, c0, r1, c1 = scene.region
        inside = np.zeros(labels.shape, dtype=bool)
        inside[max(0, r0 - row0) : max(0, r1 - row0), max(0, c0 - col0) : max(0, c1 - col0)] = True
        labels[~inside] = 255
    return labels


def change_rate(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Share of the pixels (``where`` and valid in both maps) whose class differs between ``a`` and ``b``."""
    valid = (a != 255) & (b != 255)
    if where is not None:
        valid &= where
    n = int(valid.sum())
    return float((a != b)[valid].sum() / n) if n else math.nan


def edge_band(plan: TilePlan, width: int = 4) -> np.ndarray:
    """(H, W) bool: pixels within ``width`` px of an edge of a tile of ``plan`` that lies inside the
    scene (scene borders are no tile edges)."""
    band = np.zeros((plan.height, plan.width), dtype=bool)
    cols = sorted({c for p in plan.panels for c in p.tile_cols})
    for starts, length, axis in ((plan.rows, plan.height, 0), (cols, plan.width, 1)):
        for start in starts:
            for edge in (start, start + plan.tile):
                if 0 < edge < length:
                    lo, hi = max(0, edge - width), min(length, edge + width)
                    if axis == 0:
                        band[lo:hi, :] = True
                    else:
                        band[:, lo:hi] = True
    return band


def seam_score(a: np.ndarray, b: np.ndarray, band: np.ndarray) -> dict[str, float]:
    """Change rates between ``a`` and ``b`` inside ``band`` (near tile edges) and elsewhere, and their
    ratio (NaN when nothing changes elsewhere)."""
    near, far = change_rate(a, b, band), change_rate(a, b, ~band)
    ratio = near / far if far and not math.isnan(far) else math.nan
    return {"near_edges": near, "elsewhere": far, "seam_score": ratio}


def region_miou(pred: np.ndarray, label: np.ndarray, classes: int, ignore: int = 255) -> float:
    """Mean IoU over the classes present in ``label`` or ``pred`` (pixels labelled ``ignore`` or predicted
    255 left out)."""
    valid = (label != ignore) & (pred != 255)
    p, t = pred[valid].astype(np.int64), label[valid].astype(np.int64)
    matrix = np.bincount(t * classes + p, minlength=classes * classes).reshape(classes, classes)
    inter = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else math.nan
