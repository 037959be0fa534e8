"""Set-up before the first training step: seeds, checks, DDP/compile wrapping, resume path."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from geoseg.engine.state import DistInfo
from geoseg.errors import GeosegError
from geoseg.models.recalibrate import bn_layers

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_batch_for_batchnorm(
    model: nn.Module, batch_size: int, norm: str, option: str = "data.batch_size"
) -> None:
    """BatchNorm normalises over the per-GPU batch: one chip gives no batch statistics (TerraTorch #349)."""
    if batch_size < 2 and bn_layers(model):
        raise GeosegError(
            f"{option}={batch_size} with {norm} layers: BatchNorm needs at least 2 chips per GPU; "
            f"raise {option} or use norm=groupnorm (or instancenorm, layernorm)"
        )


def wrap_model(model: nn.Module, info: DistInfo, compile_model: bool) -> nn.Module:
    """The module the train step calls: DDP across ranks, then ``torch.compile`` when asked."""
    wrapped: nn.Module = model
    if info.enabled:
        ids = [info.device.index] if info.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    if compile_model:
        wrapped = torch.compile(wrapped)
    return wrapped


def to_device(
    batch: Mapping[str, torch.Tensor], device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (raw dtype, normalised inside the model) and integer targets on ``device``."""
    images = batch["image"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, batch["mask"].to(device, non_blocking=True).long()


def resume_path(resume: str | None, run_dir: str) -> str | None:
    """``trainer.resume``: null (new run), ``auto`` (``last.pt`` in the run dir when it exists) or a path."""
    if resume in (None, "", False):
        return None
    if resume == "auto":
        path = os.path.join(run_dir, "last.pt")
        if os.path.exists(path):
            return path
        log.info(
            "trainer.resume=auto: no last.pt in %s; a new run starts (hydra.run.dir=<run> resumes one)",
            run_dir,
        )
        return None
    path = os.path.expanduser(str(resume))
    if not os.path.isfile(path):
        raise GeosegError(f"trainer.resume='{resume}' does not exist; give a last.pt path or auto")
    return path
