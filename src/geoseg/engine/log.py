"""Rank-0 run logging: ``metrics.jsonl`` rows, TensorBoard scalars, progress bars and peak memory.

Every rank builds a :class:`RunLogger`, but only rank 0's writes anything, so the training loop
calls it unconditionally. On resume, rows past the checkpoint's step are dropped from
``metrics.jsonl`` and TensorBoard purges them too, so the logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from geoseg.engine.metrics import majority_baseline
from geoseg.io import RESUME_FIX, atomic_write_text, json_safe, write_errors

if TYPE_CHECKING:
    from geoseg.engine.progress import EpochProgress
    from geoseg.engine.run import Run

log = logging.getLogger(__name__)


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"val": {"iou": {"water": 0.5}}}`` -> ``{"val/iou/water": 0.5}``, numbers only."""
    flat: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak RSS on CPU, in MiB.

    On Linux the RSS peak is ``VmHWM``, which starts afresh when a process execs; ``ru_maxrss`` keeps
    the launching process's peak (a benchmark parent's, torchrun's), so it is only the fallback.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def reset_peak_memory(device: torch.device) -> None:
    """Start :func:`peak_memory_mb` afresh, so each job of a sweep run in one process reports its own peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # "5" resets VmHWM (Linux >= 4.0)
            fh.write("5")
    except OSError:
        log.debug("cannot reset the peak RSS; peak_memory_mb is the process's peak so far")


def truncate_jsonl(path: str, max_step: int) -> None:
    """Drop rows whose ``step`` is past ``max_step`` (written after the checkpoint a resume starts from)."""
    if not os.path.exists(path):
        return
    with open(path) as fh:
        rows = [line for line in fh if line.strip()]
    keep = []
    for line in rows:
        try:
            if int(json.loads(line).get("step") or 0) <= max_step:
                keep.append(line.rstrip("\n") + "\n")
        except (ValueError, AttributeError, TypeError):
            continue  # a half-written last line from a crash
    atomic_write_text(path, "".join(keep), "training log")


CONSTANT_KEYS = ("/step", "/epoch", "/pixels")  # the x axis, and the val pixel count: not curves


class RunLogger:
    """``metrics.jsonl`` + TensorBoard under ``run_dir``; silent unless ``enabled`` (rank 0)."""

    def __init__(self, run_dir: str, enabled: bool, tensorboard: bool = True, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.writer = None
        if not enabled:
            return
        if resume_step > 0:
            truncate_jsonl(self.path, resume_step)
        with write_errors(self.path, "training log", RESUME_FIX):
            self.file = open(self.path, "a")  # noqa: SIM115 -- held open for the run, closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=resume_step or None)

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row (must hold ``kind`` and ``step``) and its numbers as TensorBoard scalars."""
        if not self.enabled:
            return
        with write_errors(self.path, "training log", RESUME_FIX):
            self.file.write(json.dumps(json_safe(dict(row))) + "\n")
            self.file.flush()
        if self.writer is not None:
            step = int(row["step"])
            for name, value in flatten(row, f"{row['kind']}/").items():
                if not name.endswith(CONSTANT_KEYS) and math.isfinite(value):
                    self.writer.add_scalar(name, value, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image in TensorBoard at ``step``."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def hparams(self, values: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The run's hyperparameters with its final metrics (TensorBoard's HPARAMS tab), in this log."""
        if self.enabled and self.writer is not None:
            self.writer.add_hparams(dict(values), dict(metrics), run_name=".")

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()


def log_step(
    logger: RunLogger, bar: EpochProgress, run: Run, loss: float, grad_norm: Any, tiles_per_s: float
) -> None:
    """One ``train`` row: this rank's mean loss over the steps since the last row (not one micro-batch's,
    which is noisy), the LR, the gradient norm and global tiles/s; the bar and progress lines get it too."""
    row = {"kind": "train", "step": run.state.step, "epoch": run.state.epoch, "loss": loss,
           "lr": run.optimizer.param_groups[0]["lr"], "tiles_per_s": tiles_per_s}  # fmt: skip
    if grad_norm is not None:
        row["grad_norm"] = float(grad_norm)
    if run.scaler.is_enabled():
        row["loss_scale"] = run.scaler.get_scale()
    logger.log(row)
    bar.update(run.state.step, loss, row["lr"])


def log_epoch(logger: RunLogger, run: Run, train_loss: float, seconds: float, tiles: int) -> None:
    """One ``epoch`` row with the train loss and the latest validation, and one line in the log."""
    state = run.state
    val = {k: v for k, v in state.last_val.items() if k != "confusion"}
    memory = peak_memory_mb(run.info.device)
    logger.log({"kind": "epoch", "step": state.step, "epoch": state.epoch, "train_loss": train_loss,
                "lr": run.optimizer.param_groups[0]["lr"], "tiles_per_s": tiles / seconds,
                "epoch_seconds": seconds, "peak_memory_mb": memory, "val": val})  # fmt: skip
    log.info(
        "epoch %d/%d  step %d  train loss %.4f  val loss %.4f  val mIoU %.4f  acc %.4f  %.1f tiles/s  %.0f s",
        state.epoch, run.max_epochs, state.step, train_loss, val.get("loss", math.nan),
        val.get("miou", math.nan), val.get("accuracy", math.nan), tiles / seconds, seconds,
    )  # fmt: skip


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


def write_summary(run: Run, wall_seconds: float, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``summary.json``: final and best val metrics, throughput, memory, batch sizes, the norm summary.

    ``extra`` (the end-of-run diagnostics) is merged in at the top level.
    """
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
        **(extra or {}),
    })  # fmt: skip
    if info.is_main:
        path = os.path.join(run.run_dir, "summary.json")
        atomic_write_text(path, json.dumps(summary, indent=2), "run summary")
        log.info("best val mIoU %.4f (epoch %s) in %s", state.best_miou, state.best_epoch, run.run_dir)
    return summary
