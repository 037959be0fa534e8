"""TensorBoard pictures and hyperparameters of a training run (rank 0).

- Every validation, ``trainer.tensorboard_images`` fixed val chips (evenly spaced over the val grid,
  the same every epoch) as one image ``val/examples``: a row per chip of the input in (false) colour,
  the label and the prediction, so the epochs can be scrubbed through.
- At the end, the run's hyperparameters with its final metrics (the HPARAMS tab, which compares runs).

Neither draws random numbers or changes the model's mode for long: a resumed run stays bit-identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from geoseg.classes import ClassInfo
from geoseg.engine.state import Run
from geoseg.inference.display import NODATA_RGB, colour_classes, display_bands, stretch

MIN_PANEL_PX = 128  # chips smaller than this are enlarged (nearest) so TensorBoard shows them legibly


def example_batch(run: Run, count: int) -> dict[str, torch.Tensor] | None:
    """``count`` val grid chips evenly spaced over this rank's shard, read once; None when off or empty."""
    chips = list(run.val.sampler)
    if count <= 0 or not chips:
        return None
    keep = np.linspace(0, len(chips) - 1, min(count, len(chips))).round().astype(int)
    try:
        return run.val.dataset.__getitems__([chips[k] for k in dict.fromkeys(keep.tolist())])
    finally:
        run.val.dataset.close()  # no open GDAL handle in this process for DataLoader workers to inherit


def channel_names(run: Run) -> list[str | None]:
    """The name of each model input channel (the selected bands of the first val scene)."""
    return run.val.scenes[0].selected_band_names


@torch.no_grad()
def render_examples(run: Run, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """(H, W, 3) uint8: one row per chip of [input | label | prediction], nodata dark grey."""
    model = run.model
    was_training = model.training
    model.eval()
    try:
        images = batch["image"].to(run.info.device)
        with torch.autocast(run.info.device.type, dtype=run.amp, enabled=run.amp is not None):
            predicted = model(images).argmax(1).cpu().numpy()
    finally:
        model.train(was_training)
    classes = ClassInfo.from_config(list(run.cfg.data.classes))
    ignore = int(run.ignore_index)
    show = [b - 1 for b in display_bands(channel_names(run), list(range(1, images.shape[1] + 1)))]
    scale = max(1, -(-MIN_PANEL_PX // images.shape[-1]))
    rows = []
    for image, mask, pred in zip(batch["image"].numpy(), batch["mask"].numpy(), predicted, strict=True):
        valid = mask != ignore
        label = colour_classes(np.where(valid, mask, 0).astype(np.int64), classes, None)
        label[~valid] = NODATA_RGB
        panels = [stretch(image[show], valid), label, colour_classes(pred, classes, None)]
        rows.append(np.concatenate([framed(p, scale) for p in panels], 1))
    return np.concatenate(rows, 0)


def framed(panel: np.ndarray, scale: int, border: int = 2) -> np.ndarray:
    """``panel`` enlarged ``scale`` times (nearest) inside a white border, so the chips stay apart."""
    big = panel.repeat(scale, 0).repeat(scale, 1) if scale > 1 else panel
    return np.pad(big, ((border, border), (border, border), (0, 0)), constant_values=255)


def hparams(run: Run) -> dict[str, Any]:
    """The options that tell runs apart, as TensorBoard hyperparameters (numbers and strings only)."""
    cfg = run.cfg
    return {
        "arch": str(run.model.meta["arch"]), "encoder": str(run.model.meta["encoder"]),
        "norm": str(run.model.meta["norm"]), "batch_size": run.batch_size,
        "global_batch_size": run.batch_size * run.info.world_size * run.accum,
        "lr": float(run.optimizer.defaults["lr"]), "epochs": run.max_epochs, "seed": int(cfg.seed),
        "amp": str(run.amp).replace("torch.", "") if run.amp else "fp32",
        "chip_size": int(cfg.data.chip_size), "bands": len(run.stats.mean),
    }  # fmt: skip


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The metrics shown beside the hyperparameters: final and best val mIoU, final loss and accuracy."""
    val = summary.get("val") or {}
    values = {"hparam/val_miou": val.get("miou"), "hparam/best_miou": summary.get("best_miou"),
              "hparam/val_loss": val.get("loss"), "hparam/val_accuracy": val.get("accuracy")}  # fmt: skip
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
