"""Preemption: SIGTERM or SIGUSR1 (what SLURM sends before a time limit) or Ctrl-C asks the loop to stop.

The handler only records the signal. The loop looks at it after every optimizer step; all ranks
agree through the step's all-reduce (see :func:`geoseg.engine.fit.step_flags`), then write
``last.pt`` with the position inside the epoch and exit with status 0 (130 after Ctrl-C; a second
Ctrl-C quits at once), so a requeued job with ``trainer.resume=auto`` continues where this one
stopped. A handler that was installed before (submitit's, which requeues the job) is called once
the checkpoint is on disk.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as a shell reports it


class Preemption:
    """Context manager: while active, SIGTERM/SIGUSR1 set :attr:`signal_name` instead of killing."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def signal_name(self) -> str:
        return self.received.name if self.received is not None else ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            again = " (Ctrl-C again to quit at once, without it)" if signum == signal.SIGINT else ""
            log.warning(
                "%s received: stopping after this step and writing last.pt%s", self.signal_name, again
            )
        elif signum == signal.SIGINT:  # a second Ctrl-C: leave now; last.pt is the previous complete one
            log.warning("second Ctrl-C: exiting now, without a new checkpoint")
            raise SystemExit(INTERRUPTED)

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers there only
            for sig in self.signals:
                if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                    continue  # a background job (nohup, `cmd &`) ignores Ctrl-C: keep it that way
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def chain(self) -> None:
        """Call the handler that was there before ours (e.g. submitit's requeue), if it was Python code."""
        previous = self.previous.get(self.received) if self.received is not None else None
        if callable(previous):
            handler: Callable[[int, FrameType | None], Any] = previous
            self.__exit__()
            handler(int(self.received), None)
