"""The training loop: ``fit(cfg, run_dir)`` in plain PyTorch, read top to bottom.

Set-up is :func:`~geoseg.engine.run.build_run`. :func:`train` loops over epochs; :func:`train_one_epoch`
takes an epoch's optimizer steps, each over ``trainer.grad_accum_steps`` micro-batches (an explicit
inner loop), under autocast, with clipping and a per-step LR schedule. The periodic work -- step
logs, BN recalibration, evaluation, epoch logs, checkpoints, the end-of-run diagnostics and the
summary -- is one small named function each.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from geoseg.engine.checkpoint import restore, save_checkpoints
from geoseg.engine.diagnostics import evaluate_run, run_diagnostics
from geoseg.engine.distributed import all_reduce_sum, broadcast_buffers, cleanup_distributed
from geoseg.engine.log import RunLogger, log_epoch, log_step, peak_memory_mb
from geoseg.engine.nonfinite import BufferSnapshot, skip_nonfinite
from geoseg.engine.preemption import Preemption
from geoseg.engine.progress import EpochProgress, RunClock, eval_progress
from geoseg.engine.run import build_run
from geoseg.engine.run_lock import run_lock
from geoseg.engine.runtime import resume_path, to_device, wrap_model
from geoseg.engine.state import DistInfo, Run
from geoseg.engine.summary import write_summary
from geoseg.engine.tensorboard_images import example_batch, final_metrics, hparams, render_examples
from geoseg.models.recalibrate import recalibrate_bn

log = logging.getLogger(__name__)


def fit(cfg: Any, run_dir: str) -> dict[str, Any]:
    """Train the model ``cfg`` describes; write checkpoints, logs and ``summary.json`` under ``run_dir``."""
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    try:
        with run_lock(os.path.abspath(run_dir), enabled=rank == 0):  # one run per folder
            return train(build_run(cfg, run_dir), time.perf_counter())
    finally:
        if owns_group:
            cleanup_distributed()


def train(run: Run, started: float) -> dict[str, Any]:
    """Resume if asked, then train epochs until ``max_epochs`` or ``total_steps``; returns the summary.

    On SIGTERM/SIGUSR1 (see :mod:`~geoseg.engine.preemption`) it writes ``last.pt`` after the current
    step and returns early without ``summary.json``; ``trainer.resume=auto`` then continues mid-epoch.
    """
    opts, info = run.options, run.info
    resume_from = resume_path(opts.resume, run.run_dir)
    if resume_from:
        run.state = restore(run, resume_from)
    state = run.state
    model = wrap_model(run.model, info, opts.compile)
    logger = RunLogger(run.run_dir, info.is_main, opts.tensorboard, resume_step=state.step)
    clock = RunClock(state.step, run.total_steps)  # the run's ETA on the bars and progress lines
    examples = example_batch(run, opts.tensorboard_images) if logger.writer else None
    log_start(run)

    with Preemption() as preempt:
        while state.epoch < run.max_epochs and state.step < run.total_steps:
            epoch = train_one_epoch(run, model, logger, clock, preempt)
            if epoch.stopped:
                return stop_for_preemption(run, preempt, logger, checkpoint=True)
            saved = end_of_epoch(run, epoch, logger, examples)
            if not finished(run) and any_rank(preempt.requested, info):  # a signal during evaluation
                return stop_for_preemption(run, preempt, logger, checkpoint=not saved)

    summary = write_summary(run, time.perf_counter() - started, run_diagnostics(run))
    logger.hparams(hparams(run), final_metrics(summary))
    logger.close()
    return summary


@dataclass(frozen=True)
class EpochResult:
    """What :func:`train_one_epoch` did: its seconds, the chips all ranks trained on, and the mean loss of
    its updates over all ranks (NaN when a stop request ended it early)."""

    seconds: float
    chips: int
    loss: float
    stopped: bool = False


def train_one_epoch(
    run: Run, model: nn.Module, logger: RunLogger, clock: RunClock, preempt: Preemption
) -> EpochResult:
    """The epoch's optimizer steps from where the run stands (mid-epoch after a preemption resume).

    Each step sums ``run.accum`` micro-batches, so no batch is read that no step uses; its one sync
    is the vote on a finite loss and on a stop request. A skipped (non-finite) step puts the BN
    statistics back and still advances the LR schedule.
    """
    opts, info, state = run.options, run.info, run.state
    # a run resumed from a preemption checkpoint skips the chips its epoch already trained on
    run.train.sampler.set_epoch(state.epoch, start=state.epoch_step * run.accum * run.batch_size)
    steps = min(len(run.train.loader) // run.accum, run.total_steps - state.step)
    buffers = BufferSnapshot(run.model)  # BN statistics to put back when a step is skipped
    zero = torch.zeros((), device=info.device)
    loss_sum, counted, chips, window = zero.clone(), 0, 0, StepWindow(zero)
    started, stopped = time.perf_counter(), False
    desc = f"epoch {state.epoch + 1}/{run.max_epochs}"
    shown = info.is_main and opts.progress
    model.train()
    batches = iter(run.train.loader)
    with EpochProgress(steps * run.accum, desc, clock, shown, opts.progress_interval_s) as bar:
        for _ in range(steps):
            buffers.take()
            step_loss = zero.clone()
            for micro in range(run.accum):
                images, target = to_device(next(batches), info.device, run.channels_last)
                with no_sync(model, info, last=micro == run.accum - 1), autocast(run):
                    loss = run.loss_fn(model(images), target)
                run.scaler.scale(loss / run.accum).backward()
                step_loss += loss.detach()
                chips += len(images) * info.world_size
                window.chips += len(images) * info.world_size
                bar.advance()
            finite, stopped = step_flags(step_loss, preempt.requested, info)  # the loop's one sync per step
            grad_norm = None
            if skip_nonfinite(state, finite, opts.max_nonfinite_steps, run.run_dir):
                run.optimizer.zero_grad(set_to_none=True)
                buffers.restore()
            else:
                grad_norm = optimizer_step(run.model, run.optimizer, run.scaler, opts.grad_clip)
                loss_sum += step_loss
                counted += run.accum
                window.add(step_loss / run.accum)
            run.scheduler.step()
            state.step += 1
            state.epoch_step += 1
            if state.step % opts.log_every == 0:
                log_train_step(run, logger, bar, window, grad_norm)
            if stopped:
                break
    seconds = time.perf_counter() - started
    state.train_seconds += seconds
    state.tiles += chips
    if stopped:
        return EpochResult(seconds, chips, math.nan, stopped=True)
    state.epoch += 1
    state.epoch_step = 0
    return EpochResult(
        seconds, chips, float(all_reduce_sum(loss_sum, info)) / max(1, counted * info.world_size)
    )


class StepWindow:
    """The updates since the last ``train`` row: their summed mean losses, count, chips and start time."""

    def __init__(self, zero: torch.Tensor) -> None:
        self.loss, self.steps, self.chips, self.started = zero.clone(), 0, 0, time.perf_counter()

    def add(self, mean_loss: torch.Tensor) -> None:
        self.loss += mean_loss
        self.steps += 1

    def take(self) -> tuple[float, float]:
        """(mean loss per update, global tiles/s) of the window, which starts again."""
        now = time.perf_counter()
        loss = self.loss.item() / self.steps if self.steps else math.nan
        tiles_per_s = self.chips / (now - self.started)
        self.loss.zero_()
        self.steps, self.chips, self.started = 0, 0, now
        return loss, tiles_per_s


def no_sync(model: nn.Module, info: DistInfo, last: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces gradients only on a step's last micro-batch."""
    return model.no_sync() if info.enabled and not last else contextlib.nullcontext()


def autocast(run: Run) -> torch.autocast:
    """The run's mixed precision (bf16/fp16), or none (fp32)."""
    return torch.autocast(run.info.device.type, dtype=run.amp, enabled=run.amp is not None)


def step_flags(step_loss: torch.Tensor, stop: bool, info: DistInfo) -> tuple[bool, bool]:
    """(the step's loss is finite on every rank, a rank was asked to stop): one all-reduce, one sync.

    Every rank takes the same decision, so a skipped step or a preemption never leaves a rank
    waiting in a collective the others left.
    """
    flags = torch.stack([step_loss.detach().float(), torch.tensor(float(stop), device=step_loss.device)])
    loss, stop_votes = all_reduce_sum(flags, info).tolist()
    return math.isfinite(loss), stop_votes > 0


def any_rank(flag: bool, info: DistInfo) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
    return bool(all_reduce_sum(torch.tensor(float(flag), device=info.device), info) > 0)


def optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, clip: float | None
) -> torch.Tensor | None:
    """Unscale, clip the global gradient norm, step (skipped by the scaler on fp16 overflow), zero."""
    grad_norm = None
    if clip:
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(clip))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def finished(run: Run) -> bool:
    """The run has taken its last epoch or step."""
    return run.state.epoch >= run.max_epochs or run.state.step >= run.total_steps


def end_of_epoch(run: Run, epoch: EpochResult, logger: RunLogger, examples: dict | None) -> bool:
    """BN recalibration, validation, the epoch row, example images and checkpoints at their cadence;
    returns whether checkpoints were written."""
    opts, state, last = run.options, run.state, finished(run)
    broadcast_buffers(run.model, run.info)  # every rank evaluates and saves rank 0's BN statistics
    if opts.precise_bn.enabled:
        recalibrate(run)
    if state.epoch % opts.eval_every == 0 or last:
        validate(run)
    lr = run.optimizer.param_groups[0]["lr"]
    log_epoch(logger, state.step, state.epoch, run.max_epochs, epoch.loss, lr, epoch.seconds, epoch.chips,
              state.last_val, peak_memory_mb(run.info.device))  # fmt: skip
    if examples is not None and state.last_val.get("epoch") == state.epoch:
        logger.image("val/examples", render_examples(run, examples), state.step)
    saved = state.epoch % opts.checkpoint_every == 0 or last
    if saved:
        save_checkpoints(run)
    return saved


def log_start(run: Run) -> None:
    """One line: the model, the device, the steps and the batch arithmetic."""
    meta, info = run.model.meta, run.info
    log.info(
        "training %s/%s norm=%s on %s: %d steps in %d epochs, batch %d/rank x %d ranks x %d accumulated, "
        "peak LR %.3g", meta["arch"], meta["encoder"], meta["norm"], info.device, run.total_steps,
        run.max_epochs, run.batch_size, info.world_size, run.accum, run.optimizer.defaults["lr"],
    )  # fmt: skip
    if finished(run):  # trainer.resume on a run that ended: say so rather than appear to train
        log.info("this run had already finished (epoch %d of %d, step %d): nothing is left to train and "
                 "the end-of-run evaluation runs again; to train on with a fresh LR schedule, start a new "
                 "run with encoder.weights=%s", run.state.epoch, run.max_epochs, run.state.step,
                 os.path.join(run.run_dir, "best.pt"))  # fmt: skip


def log_train_step(
    run: Run, logger: RunLogger, bar: EpochProgress, window: StepWindow, grad_norm: torch.Tensor | None
) -> None:
    """A ``train`` row of the window's mean loss and tiles/s (this rank's loss), on the bar too."""
    loss, tiles_per_s = window.take()
    lr = run.optimizer.param_groups[0]["lr"]
    scale = run.scaler.get_scale() if run.scaler.is_enabled() else None
    log_step(logger, run.state.step, run.state.epoch, loss, lr, tiles_per_s,
             None if grad_norm is None else float(grad_norm), scale)  # fmt: skip
    bar.update(run.state.step, loss, lr)


def stop_for_preemption(run: Run, preempt: Preemption, logger: RunLogger, checkpoint: bool) -> dict[str, Any]:
    """Write ``last.pt`` at this step (never ``best.pt``), say how to resume, then chain the old handler."""
    state = run.state
    if checkpoint:
        save_checkpoints(run, best=False)
    logger.close()
    log.warning(
        "stopped by %s %s of %d: %s/last.pt holds this step; rerun with trainer.resume=auto "
        "hydra.run.dir=%s to continue", preempt.signal_name or "a signal on another rank", state.position(),
        run.total_steps, run.run_dir, run.run_dir,
    )  # fmt: skip
    preempt.chain()  # e.g. submitit's handler, which requeues the job
    return {"preempted": preempt.signal_name or "signal", "epoch": state.epoch, "step": state.step}


def recalibrate(run: Run) -> None:
    """Precise BN: BatchNorm running statistics recomputed over training batches with the current weights."""
    used = recalibrate_bn(run.model, run.train.loader, run.options.precise_bn.num_batches, run.info.device,
                          run.amp)  # fmt: skip
    log.info("precise BN: running statistics recomputed over %d batches per rank", used)


def validate(run: Run) -> None:
    """Evaluate on the val split (a bar in a terminal) and keep the best epoch by val mIoU."""
    state = run.state
    shown = run.info.is_main and run.options.progress
    loader = eval_progress(run.val.loader, len(run.val.loader), shown, f"val {state.epoch}/{run.max_epochs}")
    state.last_val = evaluate_run(run, run.model, loader)
    state.last_val["epoch"] = state.epoch
    if state.last_val["miou"] > state.best_miou:
        state.best_miou, state.best_epoch = state.last_val["miou"], state.epoch
