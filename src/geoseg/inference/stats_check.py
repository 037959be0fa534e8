"""Does a scene look like the training data? Its per-band means and stds against the checkpoint's.

Three levels, from a decimated read of the scene (its overviews when it has them):

- **band order** (an error): the scene's bands match the training bands far better in another order
  (N,B,G,R for a model trained on R,G,B,N). The per-band pattern is compared, not each band alone: a
  reversed NAIP scene is within 2 training stds in every band, but its best reordering fits 5x better.
- **scaling** (an error): a band's mean is ``error_shift`` training stds or more from the training
  mean, or its std ``spread`` times larger or smaller (reflectance 0-1 against 0-10000, 8 against
  16 bit).
- **shift** (a warning): a band's mean is ``warn_shift`` training stds or more away (another sensor,
  season, year or processing level: NAIP 2010 against 2020). Not its std: a scene of one land cover
  rightly varies less than the whole training set.

``check_stats=false`` skips the errors; ``stats_warn`` sets ``warn_shift``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from geoseg.data.scenes import Scene
from geoseg.errors import GeosegError
from geoseg.inference.loaded import LoadedModel

log = logging.getLogger(__name__)

STATS_SAMPLE = 512  # px on the long side of the decimated read
ORDER_ERROR = 0.5  # the best reordering's misfit at most this fraction of the given order's: refused
ORDER_WARN = 0.8  # ... at most this fraction: a warning
ORDER_GAIN = 0.1  # and better by at least this much per band (in training stds), so noise never counts


@dataclass(frozen=True)
class BandSummary:
    """Per-band mean and std of a scene's valid pixels (``None`` when it has none)."""

    mean: np.ndarray
    std: np.ndarray


def summarize(scene: Scene) -> BandSummary | None:
    """Mean and std of every band over the valid pixels of a decimated read of ``scene`` (of all its
    dates pooled, for a series: the training statistics are over every date)."""
    if scene.is_series:
        parts = [p for p in (summarize(d) for d in scene.date_scenes()) if p is not None]
        if not parts:
            return None
        mean = np.mean([p.mean for p in parts], axis=0)
        var = np.mean([p.std**2 + (p.mean - mean) ** 2 for p in parts], axis=0)
        return BandSummary(mean, np.sqrt(var))
    scale = max(max(scene.height, scene.width) / STATS_SAMPLE, 1.0)
    shape = (max(1, math.ceil(scene.height / scale)), max(1, math.ceil(scene.width / scale)))
    reader = scene.reader()
    try:
        arr, invalid = reader.read_decimated(shape)
    finally:
        reader.close()
    valid = np.ones(shape, dtype=bool) if invalid is None else ~invalid
    if not valid.any():
        return None
    values = arr[:, valid].astype(np.float64)
    return BandSummary(values.mean(axis=1), values.std(axis=1))


def misfit(scene: BandSummary, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``d[i, j]``: how unlike training band ``j`` scene band ``i`` is, in training stds (mean) plus
    the log ratio of the stds."""
    safe = np.where(std > 0, std, 1.0)
    shift = np.abs(scene.mean[:, None] - mean[None, :]) / safe[None, :]
    spread = np.abs(np.log(np.maximum(scene.std, 1e-12)[:, None] / safe[None, :]))
    return shift + spread


def likely_order(d: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The reordering of the scene's bands that fits the training bands best and its misfit relative to
    the given order's, when it is another order and clearly better; else ``None``."""
    rows, cols = linear_sum_assignment(d)
    given, best = float(np.trace(d)), float(d[rows, cols].sum())
    if (cols == rows).all() or given <= 0 or (given - best) / len(cols) < ORDER_GAIN:
        return None
    return (cols, best / given) if best / given <= ORDER_WARN else None


def check_statistics(
    scene: Scene, loaded: LoadedModel, warn_shift: float = 0.5, error_shift: float = 5.0, spread: float = 50.0
) -> float | None:
    """Refuse a scene whose bands are reordered or scaled unlike the training data; warn when it is
    shifted. Returns the largest band shift in training stds (``None`` for an all-nodata scene)."""
    summary = summarize(scene)
    if summary is None:
        log.warning("input '%s' is all nodata; its prediction will be nodata everywhere", scene.image)
        return None
    mean, std = np.asarray(loaded.stats.mean, float), np.asarray(loaded.stats.std, float)
    order = likely_order(misfit(summary, mean, std))
    if order is not None:
        _refuse_or_warn_order(scene, [_band_name(loaded, i) for i in range(len(mean))], *order)
    safe = np.where(std > 0, std, 1.0)
    shift = np.abs(summary.mean - mean) / safe
    ratio = np.where(summary.std > 0, summary.std / safe, 1.0)
    off = np.flatnonzero((shift >= error_shift) | (ratio >= spread) | (ratio <= 1.0 / spread))
    if off.size:
        raise GeosegError(
            f"input '{scene.image}' does not look like the training data "
            f"({_detail(scene, summary, mean, std, off)}); check its scaling and band order, or pass "
            "check_stats=false to predict anyway"
        )
    off = np.flatnonzero(shift >= warn_shift)  # not the std: a homogeneous scene's is rightly smaller
    if off.size:
        log.warning(
            "input '%s' differs from the training data (band means up to %.2f training stds away: %s); "
            "predictions may be less accurate (another sensor, season or processing level?); stats_warn=%.2g "
            "sets this level",
            scene.image, float(shift.max()), _detail(scene, summary, mean, std, off), warn_shift,
        )  # fmt: skip
    return float(shift.max())


def _refuse_or_warn_order(scene: Scene, names: list[str], cols: np.ndarray, ratio: float) -> None:
    """The band-order error (or warning, when the evidence is weaker) with the reordering to apply."""
    moves = ", ".join(f"band {scene.bands[i]} looks like {names[j]}" for i, j in enumerate(cols) if i != j)
    text = (
        f"input '{scene.image}' has its bands in another order than the training data ({moves}; that order "
        f"fits the training statistics {1 / ratio:.1f}x better)"
    )
    source = {int(j): scene.bands[i] for i, j in enumerate(cols)}
    fix = "write it in the training order"
    if len(scene.files) <= 1 and all(isinstance(b, int) for b in scene.bands):
        flags = " ".join(f"-b {source[j]}" for j in range(len(cols)))
        fix += f" (gdal_translate {flags} IN.tif OUT.tif)"
    if ratio <= ORDER_ERROR:
        raise GeosegError(f"{text}; {fix}, or pass check_stats=false to predict anyway")
    log.warning("%s; if it is, %s", text, fix)


def _band_name(loaded: LoadedModel, index: int) -> str:
    bands = loaded.bands or []
    name = bands[index] if index < len(bands) and isinstance(bands[index], str) else None
    return f"training band {index + 1}" + (f" ({name})" if name else "")


def _detail(scene: Scene, summary: BandSummary, mean: np.ndarray, std: np.ndarray, off: np.ndarray) -> str:
    return ", ".join(
        f"band {scene.bands[i]}: mean {summary.mean[i]:.4g} std {summary.std[i]:.3g} "
        f"vs {mean[i]:.4g} std {std[i]:.3g}"
        for i in off[:3]
    )
