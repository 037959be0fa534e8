"""End-of-run tiling consistency (``trainer.diagnostics.tiling``): does the class map depend on the tile size?

The final model predicts the first val scenes (up to ``MAX_SCENES``, each cropped to ``MAX_SIDE`` px
around its val region) at two tile sizes without overlap, as ``geoseg predict`` would: tile = the
training chip size and a large tile (4x the chip, at least predict's default 512). Recorded per run,
with the norm statistics of each tile (``plain``) and with predict's default (``default``: statistics
held from the scene for GroupNorm/InstanceNorm models, the same as plain otherwise):

- ``change_pct``: the share of valid pixels whose class differs between the two tile sizes (%);
- ``seam_score``: that change rate within 4 px of the small tiles' inner edges over the rate elsewhere;
- ``miou_chip`` / ``miou_large``: val-region mIoU at each tile size.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from rasterio.windows import Window

from geoseg.data.normalize import batch_dtype, raw_fill_values
from geoseg.data.scenes import Scene
from geoseg.engine.state import Run
from geoseg.inference.norm_calibration import held_by_default, scene_statistics
from geoseg.inference.tiling import plan_tiles
from geoseg.inference.tiling_consistency import (
    WindowReader,
    change_rate,
    edge_band,
    predict_map,
    region_labels,
    region_miou,
    seam_score,
)

log = logging.getLogger(__name__)

MAX_SCENES = 4
MAX_SIDE = 2048
EDGE = 4


def crop_of(scene: Scene) -> tuple[int, int, int, int]:
    """(row0, col0, height, width) predicted of ``scene``: all of it, or ``MAX_SIDE`` px from its val
    region's corner."""
    r0, c0, _, _ = scene.region or (0, 0, scene.height, scene.width)
    if scene.height <= MAX_SIDE and scene.width <= MAX_SIDE:
        return 0, 0, scene.height, scene.width
    row0, col0 = min(r0, max(0, scene.height - MAX_SIDE)), min(c0, max(0, scene.width - MAX_SIDE))
    return row0, col0, min(MAX_SIDE, scene.height - row0), min(MAX_SIDE, scene.width - col0)


def tiling_eval(run: Run) -> dict[str, Any] | None:
    """The ``tiling`` summary field, or None for a series model (its tiles are dates x bands)."""
    scenes = [s for s in run.val.scenes if s.label is not None][:MAX_SCENES]
    if not scenes or any(s.is_series for s in scenes):
        log.info("tiling consistency: skipped (no labelled single-date val scene)")
        return None
    model = run.model.module if hasattr(run.model, "module") else run.model
    divisor = int(getattr(model, "size_divisor", 32))
    chip = max(divisor, int(run.cfg.data.chip_size) // divisor * divisor)
    large = max(4 * chip, 512)
    device, classes = run.info.device, len(run.classes)
    held_mode = held_by_default(model)
    codes = run.val.dataset.class_map.codes.astype(int).tolist()
    was_training = model.training
    model.eval()
    sums: dict[str, list[float]] = {}
    try:
        for scene in scenes:
            row0, col0, h, w = crop_of(scene)
            fill = raw_fill_values(run.stats.mean, batch_dtype([scene.dtype]))

            def opener(scene: Scene = scene, row0: int = row0, col0: int = col0) -> WindowReader:
                return WindowReader(scene.reader(), row0, col0)

            labels = region_labels(scene, codes, Window(col0, row0, w, h))
            band = edge_band(plan_tiles(h, w, chip, 0, max(chip, 256)), EDGE)
            held = None
            if held_mode:
                held = scene_statistics(model, opener, (h, w), fill, chip, device, amp=run.amp, batch_size=32,
                                        name=scene.name)  # fmt: skip
            for mode, stats in (("plain", None), ("default", held)):
                maps = [predict_map(model, opener, (h, w), fill, classes, t, 0, device, held=stats,
                                    amp=run.amp) for t in (chip, large)]  # fmt: skip
                seam = seam_score(maps[0], maps[1], band)
                values = {"change_pct": 100 * change_rate(*maps), "seam_score": seam["seam_score"],
                          "miou_chip": region_miou(maps[0], labels, classes),
                          "miou_large": region_miou(maps[1], labels, classes)}  # fmt: skip
                for key, value in values.items():
                    sums.setdefault(f"{mode}.{key}", []).append(value)
    finally:
        model.train(was_training)
    out: dict[str, Any] = {"tiles": [chip, large], "overlap": 0, "scenes": len(scenes),
                           "norm_stats": "scene" if held_mode else "tile"}  # fmt: skip
    for key, values in sums.items():
        mode, name = key.split(".")
        finite = [v for v in values if not math.isnan(v)]
        out.setdefault(mode, {})[name] = sum(finite) / len(finite) if finite else None
    log.info(
        "tiling: tile %d vs %d changes %.2f%% of the pixels (plain), %.2f%% with predict's default; "
        "val mIoU %.4f -> %.4f (plain), %.4f -> %.4f (default)", chip, large, out["plain"]["change_pct"],
        out["default"]["change_pct"], out["plain"]["miou_chip"] or math.nan,
        out["plain"]["miou_large"] or math.nan, out["default"]["miou_chip"] or math.nan,
        out["default"]["miou_large"] or math.nan,
    )  # fmt: skip
    return out
