"""The training loop: ``fit(cfg, run_dir)`` in plain PyTorch, read top to bottom.

Set-up is :func:`~geoseg.engine.run.build_run`. Then epochs of steps under autocast with gradient
accumulation, clipping and a per-step LR schedule. The periodic work -- step logs, BN
recalibration, evaluation, epoch logs, checkpoints, the end-of-run diagnostics and the final
summary -- is one small named function each.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from geoseg.engine.checkpoint import restore, save_checkpoints
from geoseg.engine.diagnostics import evaluate_run, run_diagnostics
from geoseg.engine.distributed import DistInfo, all_reduce_sum, broadcast_buffers, cleanup_distributed
from geoseg.engine.log import RunLogger, log_epoch, log_step, write_summary
from geoseg.engine.nonfinite import BufferSnapshot, skip_nonfinite
from geoseg.engine.preemption import Preemption
from geoseg.engine.progress import EpochProgress, RunClock, eval_progress
from geoseg.engine.run import Run, build_run
from geoseg.engine.run_lock import run_lock
from geoseg.engine.runtime import resume_path, to_device, wrap_model
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
    """Resume if asked, then loop epochs until ``max_epochs`` or ``total_steps``; returns the summary.

    On SIGTERM/SIGUSR1 (see :mod:`~geoseg.engine.preemption`) it writes ``last.pt`` after the current
    step and returns early without ``summary.json``; ``trainer.resume=auto`` then continues mid-epoch.
    """
    tr, info, state = run.trainer, run.info, run.state
    resume_from = resume_path(tr["resume"], run.run_dir)
    if resume_from:
        state = run.state = restore(run, resume_from)
    train_model = wrap_model(run.model, info, bool(tr["compile"]))
    logger = RunLogger(run.run_dir, info.is_main, bool(tr["tensorboard"]), resume_step=state.step)
    buffers = BufferSnapshot(run.model)  # BN statistics to put back when a step is skipped
    clock = RunClock(state.step, run.total_steps)  # the run's ETA on the bars and progress lines
    examples = example_batch(run, int(tr.get("tensorboard_images", 0))) if logger.writer else None
    log.info(
        "training %s/%s norm=%s on %s: %d steps in %d epochs, batch %d/rank x %d ranks x %d accumulated, "
        "peak LR %.3g", run.model.meta["arch"], run.model.meta["encoder"], run.model.meta["norm"],
        info.device, run.total_steps, run.max_epochs, run.batch_size, info.world_size, run.accum,
        run.optimizer.defaults["lr"],
    )  # fmt: skip

    with Preemption() as preempt:
        while state.epoch < run.max_epochs and state.step < run.total_steps:
            # a run resumed from a preemption checkpoint skips the chips its epoch already trained on
            run.train.sampler.set_epoch(state.epoch, start=state.epoch_step * run.accum * run.batch_size)
            train_model.train()
            t_epoch, t_log, micro, tiles_log, counted = time.perf_counter(), time.perf_counter(), 0, 0, 0
            loss_sum = torch.zeros((), device=info.device)
            step_loss = torch.zeros((), device=info.device)
            window_loss, window_steps = torch.zeros((), device=info.device), 0  # steps since the last row
            desc = f"epoch {state.epoch + 1}/{run.max_epochs}"
            usable = len(run.train.loader) // run.accum * run.accum  # no half-accumulated step at epoch end
            bar = EpochProgress(run.train.loader, usable, desc, clock, info.is_main and bool(tr["progress"]),
                                tr.get("progress_interval_s", 60))  # fmt: skip
            for batch in bar:
                if micro == usable:
                    break
                if micro % run.accum == 0:
                    buffers.take()
                images, target = to_device(batch, info.device, run.channels_last)
                micro += 1
                sync = micro % run.accum == 0  # DDP all-reduces gradients only on the last micro-step
                no_sync = train_model.no_sync() if info.enabled and not sync else contextlib.nullcontext()
                with no_sync, torch.autocast(info.device.type, dtype=run.amp, enabled=run.amp is not None):
                    loss = run.loss_fn(train_model(images), target)
                run.scaler.scale(loss / run.accum).backward()
                step_loss += loss.detach()
                tiles_log += len(images) * info.world_size
                if not sync:
                    continue
                finite, stop = step_flags(step_loss, preempt.requested, info)  # the loop's one sync per step
                grad_norm = None
                if skip_nonfinite(state, finite, int(tr["max_nonfinite_steps"]), run.run_dir):
                    run.optimizer.zero_grad(set_to_none=True)
                    buffers.restore()
                else:
                    grad_norm = optimizer_step(run.model, run.optimizer, run.scaler, tr["grad_clip"])
                    loss_sum += step_loss
                    counted += run.accum
                    window_loss += step_loss / run.accum
                    window_steps += 1
                step_loss.zero_()
                run.scheduler.step()
                state.step += 1
                state.epoch_step += 1
                if state.step % int(tr["log_every"]) == 0:
                    now = time.perf_counter()
                    mean_loss = window_loss.item() / window_steps if window_steps else math.nan
                    log_step(logger, bar, run, mean_loss, grad_norm, tiles_log / (now - t_log))
                    t_log, tiles_log = now, 0
                    window_loss.zero_()
                    window_steps = 0
                if stop:
                    state.train_seconds += time.perf_counter() - t_epoch
                    state.tiles += micro * run.batch_size * info.world_size
                    return stop_for_preemption(run, preempt, logger, checkpoint=True)
                if state.step >= run.total_steps:
                    break
            seconds = time.perf_counter() - t_epoch
            state.epoch += 1
            state.epoch_step = 0
            state.train_seconds += seconds
            state.tiles += micro * run.batch_size * info.world_size
            train_loss = float(all_reduce_sum(loss_sum, info)) / max(1, counted * info.world_size)
            last = state.epoch >= run.max_epochs or state.step >= run.total_steps

            broadcast_buffers(run.model, info)  # every rank evaluates and saves rank 0's BN statistics
            if tr["precise_bn"]["enabled"]:
                recalibrate(run)
            if state.epoch % int(tr["eval_every"]) == 0 or last:
                validate(run)
            log_epoch(logger, run, train_loss, seconds, micro * run.batch_size * info.world_size)
            if examples is not None and state.last_val.get("epoch") == state.epoch:
                logger.image("val/examples", render_examples(run, examples), state.step)
            saved = state.epoch % int(tr["checkpoint_every"]) == 0 or last
            if saved:
                save_checkpoints(run)
            if not last and step_flags(loss_sum, preempt.requested, info)[1]:  # a signal during eval
                return stop_for_preemption(run, preempt, logger, checkpoint=not saved)

    diagnostics = run_diagnostics(run)
    summary = write_summary(run, time.perf_counter() - started, diagnostics)
    logger.hparams(hparams(run), final_metrics(summary))
    logger.close()
    return summary


def step_flags(step_loss: torch.Tensor, stop: bool, info: DistInfo) -> tuple[bool, bool]:
    """(the step's loss is finite on every rank, a rank was asked to stop): one all-reduce, one sync.

    Every rank takes the same decision, so a skipped step or a preemption never leaves a rank
    waiting in a collective the others left.
    """
    flags = torch.stack([step_loss.detach().float(), torch.tensor(float(stop), device=step_loss.device)])
    loss, stop_votes = all_reduce_sum(flags, info).tolist()
    return math.isfinite(loss), stop_votes > 0


def stop_for_preemption(run: Run, preempt: Preemption, logger: RunLogger, checkpoint: bool) -> dict[str, Any]:
    """Write ``last.pt`` at this step (never ``best.pt``), say how to resume, then chain the old handler."""
    state = run.state
    if checkpoint:
        save_checkpoints(run, best=False)
    logger.close()
    log.warning(
        "stopped by %s at epoch %d, step %d of %d: %s/last.pt holds this step; rerun with "
        "trainer.resume=auto hydra.run.dir=%s to continue", preempt.signal_name or "a signal on another rank",
        state.epoch + (state.epoch_step > 0), state.step, run.total_steps, run.run_dir, run.run_dir,
    )  # fmt: skip
    preempt.chain()  # e.g. submitit's handler, which requeues the job
    return {"preempted": preempt.signal_name or "signal", "epoch": state.epoch, "step": state.step}


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


def recalibrate(run: Run) -> None:
    """Precise BN: BatchNorm running statistics recomputed over training batches with the current weights."""
    cfg = run.trainer["precise_bn"]
    used = recalibrate_bn(run.model, run.train.loader, int(cfg["num_batches"]), run.info.device, run.amp)
    log.info("precise BN: running statistics recomputed over %d batches per rank", used)


def validate(run: Run) -> None:
    """Evaluate on the val split (a bar in a terminal) and keep the best epoch by val mIoU."""
    state = run.state
    shown = run.info.is_main and bool(run.trainer["progress"])
    loader = eval_progress(run.val.loader, len(run.val.loader), shown, f"val {state.epoch}/{run.max_epochs}")
    state.last_val = evaluate_run(run, run.model, loader)
    state.last_val["epoch"] = state.epoch
    if state.last_val["miou"] > state.best_miou:
        state.best_miou, state.best_epoch = state.last_val["miou"], state.epoch
