"""Learning-rate schedules stepped once per optimizer step: linear warmup, then cosine, poly or constant.

:class:`WarmupSchedule` is a plain callable with scalar attributes, so ``LambdaLR.state_dict()``
stores it as numbers and a resumed run continues the same curve.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from geoseg.config import is_real, is_whole
from geoseg.errors import GeosegError

KINDS = ("cosine", "poly", "constant")


class WarmupSchedule:
    """The LR multiplier at optimizer step ``step`` of ``total_steps``."""

    def __init__(
        self,
        total_steps: int,
        kind: str = "cosine",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        power: float = 0.9,
    ) -> None:
        if kind not in KINDS:
            raise GeosegError(f"sched.kind={kind!r} is not one of {', '.join(KINDS)}")
        if total_steps < 1:
            raise GeosegError(
                "the run has no optimizer step; raise trainer.max_epochs or data.chips_per_epoch"
            )
        self.total_steps, self.kind = int(total_steps), kind
        self.warmup_steps = min(int(warmup_steps), self.total_steps - 1)
        self.min_lr_ratio, self.power = float(min_lr_ratio), float(power)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = (1.0 - progress) ** self.power
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


class FrozenStartSchedule(WarmupSchedule):
    """:class:`WarmupSchedule` held at 0 for the first ``frozen_steps`` steps (a frozen encoder)."""

    def __init__(self, total_steps: int, frozen_steps: int, **kwargs: float | int | str) -> None:
        super().__init__(total_steps, **kwargs)
        self.frozen_steps = int(frozen_steps)

    def __call__(self, step: int) -> float:
        return 0.0 if step < self.frozen_steps else super().__call__(step)


def check_schedule_options(
    warmup_fraction: float, warmup_steps: int | None, min_lr_ratio: float, power: float
) -> None:
    """One line naming a ``sched`` option outside its range (they would bend the LR curve silently)."""
    if not is_real(warmup_fraction) or not 0 <= warmup_fraction < 1:
        raise GeosegError(
            f"sched.warmup_fraction={warmup_fraction!r} must be a fraction of the run, in [0, 1)"
        )
    if warmup_steps is not None and (not is_whole(warmup_steps) or warmup_steps < 0):
        raise GeosegError(f"sched.warmup_steps={warmup_steps!r} must be a whole number >= 0, or null")
    if not is_real(min_lr_ratio) or not 0 <= min_lr_ratio <= 1:
        raise GeosegError(
            f"sched.min_lr_ratio={min_lr_ratio!r} must be in [0, 1]: the final LR over the peak LR"
        )
    if not is_real(power) or not power > 0:
        raise GeosegError(f"sched.power={power!r} must be a positive number (0.9 is the usual poly power)")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    kind: str = "cosine",
    warmup_fraction: float = 0.0,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.0,
    power: float = 0.9,
    encoder_frozen_steps: int = 0,
) -> LambdaLR:
    """``configs/sched``: warmup for ``warmup_steps`` (or ``warmup_fraction`` of the run), then ``kind``.

    With ``encoder_frozen_steps`` the parameter groups marked ``"encoder"`` keep LR 0 for those steps,
    then follow the same curve.
    """
    check_schedule_options(warmup_fraction, warmup_steps, min_lr_ratio, power)
    warmup = int(warmup_steps) if warmup_steps is not None else round(warmup_fraction * total_steps)
    shape = {"kind": kind, "warmup_steps": warmup, "min_lr_ratio": min_lr_ratio, "power": power}
    if not encoder_frozen_steps:
        return LambdaLR(optimizer, WarmupSchedule(total_steps, **shape))
    curves = [
        FrozenStartSchedule(total_steps, encoder_frozen_steps, **shape)
        if group.get("encoder") else WarmupSchedule(total_steps, **shape)
        for group in optimizer.param_groups
    ]  # fmt: skip
    return LambdaLR(optimizer, curves)
