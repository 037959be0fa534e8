"""``summary.json``: what a finished run reports (final and best val metrics, throughput, memory, batch
sizes, the norm summary, the sampling, and the end-of-run diagnostics)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from geoseg.engine.log import peak_memory_mb
from geoseg.engine.metrics import majority_baseline
from geoseg.engine.state import Run
from geoseg.io import atomic_write_text, json_safe

log = logging.getLogger(__name__)


def sampling(run: Run) -> dict[str, Any]:
    """``data.sampling`` and the class mix its chips deliver (before augmentation), per class name."""
    mix = getattr(run.train.sampler, "class_mix", None)
    data = run.cfg.data
    out: dict[str, Any] = {"mode": data.get("sampling") or "area"}
    if out["mode"] == "class_balanced":
        out["class_power"] = data.get("class_power", 0.5)
    if mix is not None:
        out["delivered_class_fraction"] = dict(zip(run.classes, mix, strict=True))
    return out


PRETRAINED_KEYS = (
    "weights", "weights_source", "weights_file", "weights_sha256", "weights_bands", "first_conv",
    "band_mapping", "input_scaling",
)  # fmt: skip


def pretrained_record(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The weights the run started from (name, file, SHA-256, band mapping), or None from scratch."""
    if not meta.get("weights"):
        return None
    return {k: meta.get(k) for k in PRETRAINED_KEYS}


def write_summary(run: Run, wall_seconds: float, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's summary (rank 0 writes ``summary.json``); ``extra`` (the diagnostics) joins the top level."""
    state, info, val = run.state, run.info, run.state.last_val
    baseline = majority_baseline(torch.tensor(val["confusion"]), run.classes)["miou"] if val else math.nan
    world = info.world_size
    summary = json_safe({
        "val": val, "best_miou": state.best_miou, "best_epoch": state.best_epoch, "epochs": state.epoch,
        "steps": state.step, "nonfinite_steps": state.nonfinite_steps, "majority_baseline_miou": baseline,
        "tiles_per_s": state.tiles / state.train_seconds if state.train_seconds else None,
        "peak_memory_mb": peak_memory_mb(info.device), "wall_seconds": wall_seconds,
        "train_seconds": state.train_seconds, "device": str(info.device), "world_size": world,
        "amp": str(run.amp).replace("torch.", "") if run.amp else "fp32",
        "batch_size_per_gpu": run.batch_size, "global_batch_size": run.batch_size * world,
        "effective_batch_size": run.batch_size * world * run.accum,
        "norm": run.model.meta["norm"], "norm_summary": run.model.meta["norm_summary"],
        "seed": int(run.cfg.seed), "peak_lr": run.optimizer.defaults.get("lr"), "sampling": sampling(run),
        "pretrained": pretrained_record(run.model.meta), **(extra or {}),
    })  # fmt: skip
    if info.is_main:
        path = os.path.join(run.run_dir, "summary.json")
        atomic_write_text(path, json.dumps(summary, indent=2), "run summary")
        log.info("best val mIoU %.4f (epoch %s) in %s", state.best_miou, state.best_epoch, run.run_dir)
    return summary
