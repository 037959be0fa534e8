"""End-of-run evaluations for ``summary.json``: the train-vs-val gap, BatchNorm's statistics and the
tiling consistency (:mod:`~geoseg.engine.tiling_eval`).

- **Generalisation gap**: the final model's mIoU on (at most ``train_max_chips``) grid chips of the
  train split, without augmentation and in eval mode, minus its val mIoU.
- **BatchNorm statistics** (models with BatchNorm only): val mIoU with the running statistics (the
  normal eval), with each val batch's own statistics (what the model saw in training), and after
  :func:`~geoseg.models.recalibrate.recalibrate_bn` over training batches. Each variant runs on a
  copy; the trained model is left as it is.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from torch import nn

from geoseg.config import as_dict
from geoseg.data.build import build_split
from geoseg.data.loader import make_loader
from geoseg.engine.evaluate import evaluate
from geoseg.engine.state import Run
from geoseg.engine.tiling_eval import tiling_eval
from geoseg.models.recalibrate import bn_layers, recalibrate_bn

log = logging.getLogger(__name__)


def run_diagnostics(run: Run) -> dict[str, Any]:
    """The ``trainer.diagnostics`` evaluations the config asks for, as summary fields."""
    wanted = run.options.diagnostics
    out: dict[str, Any] = {}
    val_miou = run.state.last_val.get("miou")
    if wanted.train_max_chips and val_miou is not None:
        train = evaluate_train_split(run, wanted.train_max_chips)
        out["train_eval"] = {k: train[k] for k in ("miou", "accuracy", "loss", "pixels")}
        out["generalization_gap"] = train["miou"] - val_miou
        log.info(
            "train-split mIoU %.4f vs val %.4f: gap %+.4f", train["miou"], val_miou, out["generalization_gap"]
        )
    if wanted.bn_statistics and bn_layers(run.model) and val_miou is not None:
        out["bn_eval"] = bn_statistics_eval(run, val_miou, run.options.precise_bn.num_batches)
    if wanted.tiling:
        tiling = tiling_eval(run)
        if tiling is not None:
            out["tiling"] = tiling
    return out


def evaluate_run(run: Run, model: nn.Module, loader: Iterable) -> dict[str, Any]:
    """Metrics of ``model`` (the run's or a variant) over ``loader`` with the run's loss and precision."""
    return evaluate(
        model, loader, run.loss_fn, run.classes, run.ignore_index, run.info, run.amp,
        run.channels_last,
    )  # fmt: skip


def val_miou(run: Run, model: nn.Module, loader: Iterable | None = None) -> float:
    """Val mIoU of ``model`` over ``loader`` (default: the run's val loader)."""
    return float(evaluate_run(run, model, loader or run.val.loader)["miou"])


def evaluate_train_split(run: Run, max_chips: int) -> dict[str, Any]:
    """Metrics of the model on an evenly spaced grid of at most ``max_chips`` train-split chips."""
    info = run.info
    split = build_split(
        as_dict(run.cfg.data), "train", run.stats, augment=None, seed=int(run.cfg.seed), rank=info.rank,
        world_size=info.world_size, scenes=run.train.scenes, grid=True, max_chips=max_chips,
    )  # fmt: skip
    return evaluate_run(run, run.model, split.loader)


def with_batch_statistics(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorm layers normalise with each batch's statistics, also in eval mode.

    A BatchNorm without running buffers uses batch statistics in eval and updates nothing.
    """
    variant = copy.deepcopy(model)
    for layer in bn_layers(variant):
        layer.running_mean, layer.running_var = None, None
    return variant


def bn_statistics_eval(run: Run, running_miou: float, num_batches: int) -> dict[str, Any]:
    """Val mIoU with running statistics, with batch statistics, and after recalibration.

    Batch statistics are taken over full val batches of the per-GPU batch size; a last, smaller batch
    is dropped (one chip may hold a single value per channel in the deepest layers).
    """
    full_batches = make_loader(run.val.dataset, run.val.sampler, as_dict(run.cfg.data), drop_last=True)
    batch_miou = val_miou(run, with_batch_statistics(run.model), full_batches) if len(full_batches) else None
    recalibrated = copy.deepcopy(run.model)
    used = recalibrate_bn(recalibrated, run.train.loader, num_batches, run.info.device, run.amp)
    recal_miou = val_miou(run, recalibrated)
    log.info(
        "BatchNorm val mIoU: running statistics %.4f, batch statistics %s, recalibrated (%d batches) %.4f",
        running_miou, "n/a" if batch_miou is None else f"{batch_miou:.4f}", used, recal_miou,
    )  # fmt: skip
    return {
        "running_stats_miou": running_miou,
        "batch_stats_miou": batch_miou,
        "recalibrated_miou": recal_miou,
        "recalibration_batches": used,
        "val_batch_size": run.batch_size,
    }
