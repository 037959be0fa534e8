"""Training feedback on rank 0: a bar per epoch in a terminal, timed log lines elsewhere, the run's ETA.

In a terminal each epoch's tqdm bar stays on screen when the epoch ends and carries the loss, the LR
and the ETA of the whole run; validation gets a bar of its own that goes away when it is done. When
stderr is not a terminal (a SLURM log, ``nohup``, CI) there is no bar: a plain log line every
``trainer.progress_interval_s`` seconds says where the run is, so a long epoch is never silent.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """``3725`` -> ``1h 2m``, ``125`` -> ``2m 5s``, ``42`` -> ``42s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


class RunClock:
    """The run's ETA from the optimizer steps this process has taken (evaluation time included)."""

    def __init__(self, start_step: int, total_steps: int) -> None:
        self.started = time.perf_counter()
        self.start_step = start_step
        self.total_steps = total_steps

    def eta(self, step: int) -> float | None:
        """Seconds left at ``step``, or None before the first step."""
        done = step - self.start_step
        if done <= 0:
            return None
        return (time.perf_counter() - self.started) / done * max(0, self.total_steps - step)


class EpochProgress:
    """One epoch's feedback: a bar (terminal) or timed log lines (anything else).

    The loop calls :meth:`advance` after each batch and :meth:`update` with each logged step's loss;
    :meth:`close` (or leaving the ``with`` block) ends the bar.
    """

    def __init__(self, total: int, desc: str, clock: RunClock, enabled: bool, interval_s: float) -> None:
        self.desc, self.clock = desc, clock
        self.enabled, self.interval_s = enabled, float(interval_s)
        self.total = total
        self.count = 0
        self.bar = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, unit="batch")
        self.step: int | None = None
        self.loss: float | None = None
        self.last_line = time.perf_counter()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def advance(self) -> None:
        """One more batch done: the bar moves, or a progress line when one is due."""
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled and self.interval_s > 0 and self.due():
            self.log_line(self.count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def due(self) -> bool:
        """A progress line is due: ``interval_s`` since the last one (or the epoch's start)."""
        return time.perf_counter() - self.last_line >= self.interval_s

    def update(self, step: int, loss: float, lr: float) -> None:
        """The latest step, its loss and LR: the bar's postfix, the next log line's numbers."""
        self.step, self.loss = step, loss
        if self.bar is not None:
            eta = self.clock.eta(step)
            self.bar.set_postfix_str(
                f"loss {loss:.4f}, lr {lr:.2e}" + (f", run ETA {duration(eta)}" if eta is not None else ""),
                refresh=False,
            )

    def log_line(self, count: int) -> None:
        """``epoch 2/5  batch 120/512 (23%)  step 632/1280  loss 0.3100  run ETA 4m 10s``."""
        self.last_line = time.perf_counter()
        parts = [f"{self.desc}  batch {count}/{self.total} ({100 * count / max(1, self.total):.0f}%)"]
        if self.step is not None:
            parts.append(f"step {self.step}/{self.clock.total_steps}")
            eta = self.clock.eta(self.step)
            parts.append(f"loss {self.loss:.4f}")
            if eta is not None:
                parts.append(f"run ETA {duration(eta)}")
        log.info("  ".join(parts))


def eval_progress(iterable: Iterable, total: int, enabled: bool, desc: str = "val") -> Iterable:
    """A bar over the validation batches in a terminal, gone when validation ends; else ``iterable``."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, unit="batch")
