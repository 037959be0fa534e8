"""What a training run holds, as plain types: where the process sits (:class:`DistInfo`), the trainer
options parsed once (:class:`TrainerOptions`), the counters a checkpoint carries (:class:`Progress`) and
the run's objects (:class:`Run`).

It imports nothing else from :mod:`geoseg.engine`, so every engine module can import it and none
imports another only for a type hint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from geoseg.config import flag, is_real, is_whole
from geoseg.data.build import SplitData
from geoseg.data.stats import BandStats
from geoseg.errors import GeosegError
from geoseg.models.build import SegmentationModel


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job, and the device it trains on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class PreciseBN:
    """``trainer.precise_bn``: recompute BatchNorm running statistics before each eval."""

    enabled: bool = False
    num_batches: int = 50


@dataclass(frozen=True)
class Diagnostics:
    """``trainer.diagnostics``: the end-of-run evaluations added to ``summary.json`` (off by default)."""

    train_max_chips: int = 0
    bn_statistics: bool = False
    tiling: bool = False  # class changes and mIoU at tile = chip size vs a large tile (engine/tiling_eval.py)


POSITIVE = ("max_epochs", "grad_accum_steps", "eval_every", "checkpoint_every", "log_every",
            "max_nonfinite_steps")  # fmt: skip


@dataclass(frozen=True)
class TrainerOptions:
    """``configs/trainer`` parsed and checked once (see ``configs/trainer/default.yaml`` for each)."""

    max_epochs: int = 5
    max_steps: int | None = None
    device: str = "auto"
    amp: str = "auto"
    grad_accum_steps: int = 1
    grad_clip: float | None = 1.0
    max_nonfinite_steps: int = 10
    channels_last: str | bool = "auto"
    compile: bool = False
    eval_every: int = 1
    checkpoint_every: int = 1
    log_every: int = 10
    keep_checkpoints: str = "all"
    latest_link: str | None = None
    resume: str | None = None
    tensorboard: bool = True
    tensorboard_images: int = 4
    progress: bool = True
    progress_interval_s: float = 60.0
    precise_bn: PreciseBN = field(default_factory=PreciseBN)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    @classmethod
    def from_config(cls, tr: Mapping[str, Any]) -> TrainerOptions:
        """Check the options that must be whole numbers (one line naming the option) and parse them all."""
        for key in POSITIVE:
            if not is_whole(tr[key]) or tr[key] < 1:
                raise GeosegError(f"trainer.{key}={tr[key]!r} must be a whole number >= 1")
        if tr.get("max_steps") is not None and (not is_whole(tr["max_steps"]) or tr["max_steps"] < 1):
            raise GeosegError(f"trainer.max_steps={tr['max_steps']!r} must be a whole number >= 1 (or null)")
        diagnostics = dict(tr.get("diagnostics") or {})
        chips = diagnostics.get("train_max_chips") or 0
        if not is_whole(chips) or chips < 0:
            raise GeosegError(
                f"trainer.diagnostics.train_max_chips={chips!r} must be a whole number >= 0 (0 = skip)"
            )
        precise = dict(tr.get("precise_bn") or {})
        clip, images = tr.get("grad_clip"), tr.get("tensorboard_images")
        interval = tr.get("progress_interval_s", 60)
        if clip is not None and (not is_real(clip) or clip < 0):  # torch flips gradients for a negative norm
            raise GeosegError(
                f"trainer.grad_clip={clip!r} must be a positive max gradient norm, or null (no clipping)"
            )
        if images is not None and (not is_whole(images) or images < 0):
            raise GeosegError(f"trainer.tensorboard_images={images!r} must be a whole number >= 0 (0 = none)")
        if interval is not None and (not is_real(interval) or interval < 0):
            raise GeosegError(
                f"trainer.progress_interval_s={interval!r} must be a number of seconds >= 0 (0 = none)"
            )
        return cls(
            max_epochs=tr["max_epochs"], max_steps=tr.get("max_steps"), device=str(tr.get("device", "auto")),
            amp=str(tr.get("amp", "auto")), grad_accum_steps=tr["grad_accum_steps"],
            grad_clip=float(clip) if clip else None, max_nonfinite_steps=tr["max_nonfinite_steps"],
            channels_last=tr.get("channels_last", "auto"), compile=flag(tr, "compile", False, "trainer."),
            eval_every=tr["eval_every"], checkpoint_every=tr["checkpoint_every"], log_every=tr["log_every"],
            keep_checkpoints=str(tr.get("keep_checkpoints", "all")), latest_link=tr.get("latest_link"),
            resume=tr.get("resume"), tensorboard=flag(tr, "tensorboard", True, "trainer."),
            tensorboard_images=int(images or 0),
            progress=flag(tr, "progress", True, "trainer."),
            progress_interval_s=float(interval or 0),
            precise_bn=PreciseBN(
                flag(precise, "enabled", False, "trainer.precise_bn."), int(precise.get("num_batches", 50))
            ),
            diagnostics=Diagnostics(chips, flag(diagnostics, "bn_statistics", False, "trainer.diagnostics."),
                                    flag(diagnostics, "tiling", False, "trainer.diagnostics.")),
        )  # fmt: skip


@dataclass
class Progress:
    """Counters a checkpoint carries so that a resumed run continues exactly."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    epoch_step: int = 0  # optimizer steps taken in the unfinished epoch (a preemption checkpoint's position)
    nonfinite_steps: int = 0  # updates skipped for a NaN/inf loss, in the whole run
    nonfinite_streak: int = 0  # of which in a row, up to now
    best_miou: float = -math.inf
    best_epoch: int | None = None
    train_seconds: float = 0.0
    tiles: int = 0  # training chips seen, all ranks
    last_val: dict[str, Any] = field(default_factory=dict)

    def position(self) -> str:
        """Where the run stands, counting epochs from 1 as the progress bars do: ``at epoch 2, step 11``
        inside an epoch, ``after epoch 1, step 8`` between epochs (the stop and resume lines say the same)."""
        if self.epoch_step > 0:
            return f"at epoch {self.epoch + 1}, step {self.step}"
        return f"after epoch {self.epoch}, step {self.step}"


@dataclass
class Run:
    """The objects of one training run and its resolved options."""

    cfg: DictConfig
    run_dir: str
    info: DistInfo
    options: TrainerOptions
    amp: torch.dtype | None
    stats: BandStats
    classes: list[str]
    train: SplitData
    val: SplitData
    model: SegmentationModel
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    total_steps: int
    max_epochs: int
    channels_last: bool = False  # trainer.channels_last resolved for this model (auto -> true/false)
    state: Progress = field(default_factory=Progress)

    @property
    def accum(self) -> int:
        """Micro-batches summed into each optimizer step (``trainer.grad_accum_steps``)."""
        return self.options.grad_accum_steps

    @property
    def batch_size(self) -> int:
        """Chips per rank per micro-step: the batch BatchNorm sees."""
        return int(self.cfg.data.batch_size)

    @property
    def ignore_index(self) -> int:
        return int(self.cfg.data.ignore_index)
