"""Blending on the model's device: weighted class probabilities of one panel, finished blocks out.

The panel accumulator (probabilities x blending weight, and the weights) is a pair of tensors on the
device the model runs on; a finished block is divided by its weights and reduced to class indices
there, and only the class block (and uint8 probabilities when asked for) is copied back. The
arithmetic is the same float32 multiply, add and divide in the same order as a NumPy accumulator,
so on the CPU the class maps are bit for bit those of geoseg 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.inference.tiling import Panel, TilePlan


@dataclass
class FinishedBlock:
    """Rows of one panel no later tile touches: class indices, optional uint8 probabilities, validity."""

    window: Window
    labels: np.ndarray  # (h, w) class indices (uint8, or uint16 for more than 255 classes)
    probs: np.ndarray | None  # (K, h, w) probabilities when kept: uint8 (x 255, rounded) or float32
    invalid: np.ndarray  # (h, w) bool: no valid input pixel


@dataclass
class PendingBlock:
    """A finished block still as weighted sums on the device; :meth:`finish` (in the writer's thread,
    so the model's thread never waits for it) divides, reduces to classes and copies to the host."""

    window: Window
    prob: torch.Tensor  # (K, h, w) weighted probability sums
    weight: torch.Tensor  # (h, w) sums of weights
    invalid: np.ndarray
    label_dtype: torch.dtype
    keep_probs: str | None

    @torch.inference_mode()
    def finish(self) -> FinishedBlock:
        probs = self.prob / self.weight
        labels = first_argmax(probs, self.label_dtype).cpu().numpy()
        kept = None
        if self.keep_probs == "uint8":
            kept = torch.round(probs * 255.0).to(torch.uint8).cpu().numpy()
        elif self.keep_probs == "float32":
            kept = probs.cpu().numpy()
        return FinishedBlock(self.window, labels, kept, self.invalid)


def first_argmax(probs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Index of the largest of (K, h, w) along K, the first one on ties (as ``np.argmax``).

    One pass per class: on the CPU several times faster than ``torch.argmax(dim=0)``, which reduces
    over the outermost, strided dimension.
    """
    best = probs[0].clone()
    index = torch.zeros(probs.shape[1:], dtype=dtype, device=probs.device)
    for k in range(1, probs.shape[0]):
        better = probs[k] > best
        index.masked_fill_(better, k)
        torch.maximum(best, probs[k], out=best)
    return index


class PanelAccumulator:
    """Weighted probability sums, on ``device``, for the rows of one panel not yet handed out.

    ``keep_probs``: None (class indices only), ``"uint8"`` (probability x 255, rounded half to even as
    ``np.rint``) or ``"float32"`` (the blended probabilities themselves).
    """

    def __init__(self, panel: Panel, plan: TilePlan, classes: int, block: int, device: torch.device,
                 label_dtype: torch.dtype, keep_probs: str | None = None) -> None:  # fmt: skip
        self.panel, self.top, self.left = panel, 0, panel.left
        self.label_dtype, self.keep_probs = label_dtype, keep_probs
        width = min(panel.tile_cols[-1] + plan.tile, plan.width) - self.left
        rows = plan.tile + block
        self.prob = torch.zeros((classes, rows, width), dtype=torch.float32, device=device)
        self.weight = torch.zeros((rows, width), dtype=torch.float32, device=device)
        self.invalid = np.zeros((rows, width), dtype=bool)  # set from the readers' masks, on the host

    def add(self, probs: torch.Tensor, weight: torch.Tensor, invalid: np.ndarray | None, row: int,
            col: int) -> None:  # fmt: skip
        """Add one tile's (K, h, w) probabilities with (h, w) weights at scene pixel (row, col)."""
        h, w = weight.shape
        r, c = row - self.top, col - self.left
        self.prob[:, r : r + h, c : c + w] += probs * weight
        self.weight[r : r + h, c : c + w] += weight
        if invalid is not None:
            self.invalid[r : r + h, c : c + w] = invalid

    def flush(self, upto: int) -> PendingBlock | None:
        """Hand out rows ``[top, upto)`` of the panel's columns as a finished block, then drop them."""
        n = upto - self.top
        if n <= 0:
            return None
        c0, c1 = self.panel.col0 - self.left, self.panel.col1 - self.left
        prob, weight = self.prob[:, :n, c0:c1].clone(), self.weight[:n, c0:c1].clone()
        invalid = self.invalid[:n, c0:c1].copy()
        window = Window(self.panel.col0, self.top, self.panel.col1 - self.panel.col0, n)
        keep = self.weight.shape[0] - n
        for arr in (self.prob, self.weight):
            arr[..., :keep, :] = arr[..., n:, :].clone()
            arr[..., keep:, :] = 0
        self.invalid[:keep] = self.invalid[n:]
        self.invalid[keep:] = False
        self.top = upto
        return PendingBlock(window, prob, weight, invalid, self.label_dtype, self.keep_probs)
