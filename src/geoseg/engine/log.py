"""Rank-0 run logging: ``metrics.jsonl`` rows, TensorBoard scalars and peak memory, from plain values.

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
from typing import Any

import numpy as np
import torch

from geoseg.io import RESUME_FIX, atomic_write_text, json_safe, write_errors

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
    logger: RunLogger, step: int, epoch: int, loss: float, lr: float, tiles_per_s: float,
    grad_norm: float | None = None, loss_scale: float | None = None,
) -> None:  # fmt: skip
    """One ``train`` row: the mean loss over the steps since the last row (not one micro-batch's, which
    is noisy), the LR, global tiles/s, and the gradient norm and fp16 loss scale when there are any."""
    row: dict[str, Any] = {"kind": "train", "step": step, "epoch": epoch, "loss": loss, "lr": lr,
                           "tiles_per_s": tiles_per_s}  # fmt: skip
    if grad_norm is not None:
        row["grad_norm"] = float(grad_norm)
    if loss_scale is not None:
        row["loss_scale"] = loss_scale
    logger.log(row)


def log_epoch(
    logger: RunLogger, step: int, epoch: int, max_epochs: int, train_loss: float, lr: float, seconds: float,
    tiles: int, val: Mapping[str, Any], memory_mb: float,
) -> None:  # fmt: skip
    """One ``epoch`` row with the train loss and the latest validation (its confusion matrix left out),
    and one line in the log."""
    val = {k: v for k, v in val.items() if k != "confusion"}
    logger.log({"kind": "epoch", "step": step, "epoch": epoch, "train_loss": train_loss, "lr": lr,
                "tiles_per_s": tiles / seconds, "epoch_seconds": seconds, "peak_memory_mb": memory_mb,
                "val": val})  # fmt: skip
    log.info(
        "epoch %d/%d  step %d  train loss %.4f  val loss %.4f  val mIoU %.4f  acc %.4f  %.1f tiles/s  %.0f s",
        epoch, max_epochs, step, train_loss, val.get("loss", math.nan), val.get("miou", math.nan),
        val.get("accuracy", math.nan), tiles / seconds, seconds,
    )  # fmt: skip
