"""Non-finite losses and weights: skip the update, count it, stop after too many in a row.

NaN/inf pixels are nodata before they reach the model (``data/masks.py``), so a non-finite loss
means the model or the precision overflowed. One such step is skipped: no optimizer update, and the
BatchNorm running statistics its forward pass poisoned are put back. ``trainer.max_nonfinite_steps``
skips in a row stop the run with a clear error; no checkpoint is written from non-finite weights, so
``last.pt`` stays the last good one. fp16 gradient overflow with a finite loss is the GradScaler's
job (it skips that step and lowers the scale) and is not counted here.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from geoseg.engine.state import Progress
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)

ADVICE = (
    "lower optim.lr, keep trainer.grad_clip on, use trainer.amp=bf16 or fp32 instead of fp16, "
    "or check the labels and data.classes"
)


class BufferSnapshot:
    """A copy of a model's floating-point buffers (BatchNorm running statistics) to undo one step.

    :meth:`take` is one concatenation kernel per optimizer step; :meth:`restore` runs only after a
    skipped step. A model without such buffers (GroupNorm, no norm) costs nothing.
    """

    def __init__(self, model: nn.Module) -> None:
        self.buffers = [b for b in model.buffers() if b.is_floating_point()]
        self.saved: torch.Tensor | None = None

    def take(self) -> None:
        if self.buffers:
            self.saved = torch.cat([b.detach().reshape(-1) for b in self.buffers])

    def restore(self) -> None:
        if self.saved is None:
            return
        offset = 0
        with torch.no_grad():
            for b in self.buffers:
                b.copy_(self.saved[offset : offset + b.numel()].view_as(b))
                offset += b.numel()


def skip_nonfinite(state: Progress, finite: bool, limit: int, run_dir: str) -> bool:
    """Whether this step's update must be skipped; a :class:`GeosegError` after ``limit`` in a row."""
    if finite:
        state.nonfinite_streak = 0
        return False
    state.nonfinite_steps += 1
    state.nonfinite_streak += 1
    log.warning(
        "step %d: non-finite loss, update skipped (%d skipped in this run, %d in a row; the run stops at "
        "trainer.max_nonfinite_steps=%d)", state.step + 1, state.nonfinite_steps, state.nonfinite_streak,
        limit,
    )  # fmt: skip
    if state.nonfinite_streak >= limit:
        last = os.path.join(run_dir, "last.pt")
        kept = (
            f"the last good checkpoint {last} is kept"
            if os.path.exists(last)
            else "no checkpoint was written"
        )
        raise GeosegError(
            f"{state.nonfinite_streak} optimizer steps in a row had a NaN/inf loss (up to step "
            f"{state.step + 1}, trainer.max_nonfinite_steps={limit}); training stopped and {kept}. "
            f"To fix: {ADVICE}"
        )
    return True


def check_weights_finite(model: nn.Module, state: Progress, run_dir: str) -> None:
    """Refuse to checkpoint NaN/inf weights or statistics: ``last.pt`` keeps the last good ones."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        return
    last = os.path.join(run_dir, "last.pt")
    kept = f"{last} keeps the last good weights" if os.path.exists(last) else "no checkpoint was written"
    raise GeosegError(
        f"the model holds NaN/inf weights {state.position()}; training stopped and {kept}. To fix: {ADVICE}"
    )
