"""Scene statistics for the tile-dependent norms: the first pass of ``geoseg predict norm_stats=scene``.

Windows of the training chip size on a regular grid over the scene (evenly thinned to at most
``max_windows``) go through the model once, plain; each GroupNorm/InstanceNorm/FRN layer's statistics
are averaged over them (:func:`~geoseg.models.norm_statistics.collect_statistics`) and then held
while the scene is predicted tile by tile, so the class map no longer depends on the tile size and
every tile is normalised as the model's training chips were on average. Windows with fewer than half
of their pixels valid are left out (nodata collars would skew the statistics).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch import nn

from geoseg.errors import GeosegError
from geoseg.inference.loaded_model import LoadedModel
from geoseg.inference.tiling import positions
from geoseg.models.norm_statistics import LayerStatistics, collect_statistics, tile_dependent_layers

log = logging.getLogger(__name__)

NORM_STATS = ("auto", "tile", "scene")
MIN_VALID = 0.5  # a calibration window needs at least this share of valid pixels
DEFAULT_CHIP = 64  # px: windows for a checkpoint that does not say its chip size (data.chip_size's default)


def check_norm_stats(value: object) -> str:
    """``norm_stats`` as given, or a one-line error naming the choices."""
    if value not in NORM_STATS:
        raise GeosegError(
            f"norm_stats={value!r} must be one of {', '.join(NORM_STATS)} (auto = scene for models with "
            "GroupNorm or InstanceNorm, whose statistics would otherwise follow the tile)"
        )
    return str(value)


def held_by_default(model: object) -> bool:
    """Whether ``norm_stats=auto`` holds scene statistics for ``model``: it has GroupNorm (GN+WS too) or
    InstanceNorm layers. FRN keeps each tile's own statistics: held, its class map changed more with
    the tile size, not less (docs/tiling.md); ``norm_stats=scene`` still holds them when asked."""
    if not isinstance(model, nn.Module):
        return False
    return any(isinstance(m, nn.GroupNorm | nn.InstanceNorm2d) for m in tile_dependent_layers(model).values())


def resolve_norm_stats(value: str, loaded: LoadedModel) -> str:
    """``tile`` or ``scene`` for this model (``scene`` only where some layer depends on the tile)."""
    value = check_norm_stats(value)
    model = loaded.model
    if value == "scene" and not isinstance(model, nn.Module):
        raise GeosegError(f"norm_stats=scene needs a geoseg checkpoint; {loaded.path} is an exported model, "
                          "which normalises each tile by itself: set norm_stats=tile")  # fmt: skip
    if value == "auto":
        return "scene" if held_by_default(model) else "tile"
    return "scene" if value == "scene" and tile_dependent_layers(model) else "tile"


def calibration_windows(
    height: int, width: int, chip: int, max_windows: int, region: tuple[int, int, int, int] | None = None
) -> list[Window]:
    """``chip``-px windows on a grid covering the scene (or its ``region``: row0, col0, row1, col1),
    evenly thinned to at most ``max_windows``."""
    row0, col0, row1, col1 = region or (0, 0, height, width)
    height, width = row1 - row0, col1 - col0
    size_r, size_c = min(chip, height), min(chip, width)
    rows, cols = positions(height, size_r, size_r), positions(width, size_c, size_c)
    windows = [Window(col0 + c, row0 + r, size_c, size_r) for r in rows for c in cols]
    if len(windows) > max_windows:
        picks = np.linspace(0, len(windows) - 1, max_windows).round().astype(int)
        windows = [windows[i] for i in sorted(set(picks.tolist()))]
    return windows


def window_batches(
    open_reader: Callable[[], Any], windows: Sequence[Window], fill: np.ndarray, batch_size: int,
    device: torch.device,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """Raw chips of ``windows`` (invalid pixels filled), in batches on ``device``; mostly-nodata windows
    are left out. ``open_reader()`` gives what predict reads tiles with (a scene's or a series' reader)."""
    reader = open_reader()
    try:
        chips: list[np.ndarray] = []
        for window in windows:
            chip = np.empty((len(fill), window.height, window.width), dtype=fill.dtype)
            invalid = reader.read(window, chip)
            if invalid is not None:
                if invalid.mean() > 1 - MIN_VALID:
                    continue
                np.copyto(chip, fill[:, None, None], where=invalid)
            chips.append(chip)
            if len(chips) == batch_size:
                yield torch.from_numpy(np.stack(chips)).to(device)
                chips = []
        if chips:
            yield torch.from_numpy(np.stack(chips)).to(device)
    finally:
        reader.close()


def scene_statistics(
    model: nn.Module, open_reader: Callable[[], Any], shape: tuple[int, int], fill: np.ndarray, chip: int,
    device: torch.device, *, max_windows: int = 64, batch_size: int = 8, amp: torch.dtype | None = None,
    region: tuple[int, int, int, int] | None = None, name: str = "scene",
) -> dict[str, LayerStatistics]:  # fmt: skip
    """The tile-dependent layers' statistics averaged over ``chip``-px windows of the ``shape`` scene that
    ``open_reader()`` reads (raw bands, invalid pixels filled with ``fill``; a window of a scene smaller
    than ``chip`` is padded with it, as predict pads its one tile); empty, with a warning, when no
    window is half valid."""
    divisor = int(getattr(model, "size_divisor", 32))
    chip = max(divisor, chip // divisor * divisor)
    windows = calibration_windows(*shape, chip, max_windows, region)
    chips = window_batches(open_reader, windows, fill, batch_size, device)
    stats = collect_statistics(model, (pad_to(x, chip, fill) for x in chips), amp)
    if not stats:
        log.warning("%s: no window of %d px has half its pixels valid; each tile is normalised by itself "
                    "(norm_stats=tile)", name, chip)  # fmt: skip
        return {}
    used = next(iter(stats.values())).windows
    log.info("%s: norm statistics of %d layers held from %d windows of %d px", name, len(stats), used, chip)
    return stats


def pad_to(x: torch.Tensor, size: int, fill: np.ndarray) -> torch.Tensor:
    """(B, C, h, w) chips padded with the band fill to (B, C, size, size)."""
    if x.shape[-2:] == (size, size):
        return x
    shape = (x.shape[0], len(fill), size, size)
    out = torch.from_numpy(np.broadcast_to(fill[None, :, None, None], shape).copy()).to(x.device)
    out[:, :, : x.shape[2], : x.shape[3]] = x
    return out
