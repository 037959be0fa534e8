"""Class-balanced random chips (``data.sampling: class_balanced``) and the class mix chips deliver.

Per scene, the label is read once at full resolution onto the image grid and counted per class on
cells of the candidate lattice (``step`` px), so every candidate chip, which covers whole cells, gets
its exact class fractions (before augmentation). With ``area`` sampling a chip's weight is its valid
fraction; with ``class_balanced`` it is ``sum_k f_ck * F_k ** -power``: ``f_ck`` the chip's fraction
of class ``k``, ``F_k`` the class's frequency over all candidates. ``power`` 1 weighs every class
equally per pixel, 0 is area sampling, 0.5 (the default) is in between. The expected class mix of
the drawn chips is reported (``summary.json``: ``sampling``).
"""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.scenes import Scene
from geoseg.data.windows import window_valid_fraction

SAMPLING = ("area", "class_balanced")
STRIP_CELLS = 64  # cell rows read at a time


def class_cell_counts(scene: Scene, step: int, cmap: ClassMap) -> np.ndarray:
    """(K, ceil(H/step), ceil(W/step)) pixel counts of each class per ``step``-px cell of the scene."""
    k = len(cmap.codes)
    rows, cols = -(-scene.height // step), -(-scene.width // step)
    counts = np.zeros((k, rows, cols), dtype=np.int32)
    src, reader = open_label_on_grid(scene, cmap.codes.astype(int).tolist())
    try:
        for r0 in range(0, rows, STRIP_CELLS):
            top, bottom = r0 * step, min(scene.height, (r0 + STRIP_CELLS) * step)
            lab = reader.read(1, window=Window(0, top, scene.width, bottom - top))
            index = np.full((-(-(bottom - top) // step) * step, cols * step), cmap.ignore_index, np.int64)
            index[: bottom - top, : scene.width] = cmap(lab)
            cells = index.reshape(index.shape[0] // step, step, cols, step)
            for c in range(k):
                counts[c, r0 : r0 + cells.shape[0]] = (cells == c).sum(axis=(1, 3))
    finally:
        if reader is not src:
            reader.close()
        src.close()
    return counts


def candidate_class_fractions(
    counts: np.ndarray, origins: np.ndarray, offset: tuple[int, int], size: int, step: int
) -> np.ndarray:
    """(N, K) class fractions of the chips at ``origins`` (absolute px) from a scene's cell counts.

    ``offset`` is the (row, col) px of the first candidate cell (the split's region start)."""
    rel = (origins - np.asarray(offset)) // step
    i0, j0 = offset[0] // step, offset[1] // step
    out = np.zeros((len(origins), counts.shape[0]))
    for c in range(counts.shape[0]):
        frac = window_valid_fraction(counts[c, i0:, j0:] / float(step * step), size, step)
        if frac.size:
            out[:, c] = frac[rel[:, 0], rel[:, 1]]
    return out


def balanced_weights(fractions: np.ndarray, power: float) -> np.ndarray:
    """Chip weights ``sum_k f_ck * F_k ** -power`` (``F_k``: class frequency over all candidates)."""
    total = fractions.sum(axis=0)
    freq = total / max(total.sum(), 1e-12)
    scale = np.where(freq > 0, np.maximum(freq, 1e-12) ** -power, 0.0)
    return fractions @ scale


def delivered_fractions(fractions: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The class mix (summing to 1 over labelled pixels) of chips drawn with probabilities ``p``."""
    mix = p @ fractions
    return mix / max(mix.sum(), 1e-12)
