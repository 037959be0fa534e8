"""Training checkpoints: a plain dict of tensors and numbers, written atomically, loaded weights-only.

A checkpoint holds ``model`` (state dict) and ``meta`` (the model's build record, see
``SegmentationModel.meta``) -- the two keys any geoseg tool needs to rebuild the model -- and for an
exact resume the optimizer, scheduler and GradScaler states, the epoch/step counters, the best
score so far, every RNG state, the resolved config, the band statistics, the class names and the
norm summary. Everything is a tensor, number, string, list or dict, so
``torch.load(weights_only=True)`` reads it and no pickled code can run.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import pickle
import random
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from geoseg.engine.distributed import DistInfo
from geoseg.engine.nonfinite import check_weights_finite
from geoseg.engine.state import Progress, Run
from geoseg.errors import GeosegError, first_line, unpickling_detail
from geoseg.io import RESUME_FIX, atomic_write, json_safe

log = logging.getLogger(__name__)

FORMAT = "geoseg-checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "model", "meta", "optimizer", "scheduler", "epoch", "step", "rng")
# best.pt and save_model_checkpoint files: for inference and fine-tuning, a third the size of last.pt
WEIGHTS_ONLY = {"weights_only": True, "optimizer": {}, "scheduler": {}, "scaler": None, "rng": []}


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python, NumPy and torch (CPU and this CUDA device) generator states, as plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` (see :data:`REQUIRED`) to a temporary file, then rename it onto ``path``.

    A failed write (disk full, quota, I/O error) leaves the previous file untouched and is one
    :class:`GeosegError` line with the free space left.
    """
    payload = {"format": FORMAT, "version": VERSION, **state}

    def write(tmp: str) -> None:
        try:
            torch.save(payload, tmp)
        except RuntimeError as err:  # torch reports a short write (disk full) as a RuntimeError
            raise OSError(errno.EIO, f"write failed: {first_line(err)}") from None

    atomic_write(path, write, "checkpoint", RESUME_FIX)


def save_model_checkpoint(
    path: str | os.PathLike, model: torch.nn.Module, stats: Mapping[str, Any], config: Mapping[str, Any]
) -> None:
    """A checkpoint for inference only (weights, build record, statistics, config): it cannot resume.

    ``config`` needs the ``norm`` group and ``data.classes`` (and ``data.bands``/``data.nodata`` when
    set); it is how models trained elsewhere, or untrained ones for benchmarks, reach ``geoseg predict``.
    """
    classes = [str(c["name"]) for c in config["data"]["classes"]]
    save_checkpoint(path, {
        "model": model.state_dict(), "meta": model.meta, "epoch": 0, "step": 0, "stats": dict(stats),
        "classes": classes, "config": dict(config), **WEIGHTS_ONLY,
    })  # fmt: skip


MISSING_FIX = (
    "check the path: a training run writes RUN/best.pt and RUN/last.pt, and outputs/train/latest links "
    "the newest finished run"
)


def checkpoint_file(path: str, option: str = "checkpoint") -> str:
    """``path`` itself, or for a training run's folder its ``best.pt`` (else its ``last.pt``, saying so)."""
    if not os.path.isdir(path):
        return path
    best, last = os.path.join(path, "best.pt"), os.path.join(path, "last.pt")
    if os.path.isfile(best):
        return best
    if os.path.isfile(last):
        log.info("%s='%s' has no best.pt (no validated epoch kept); using its last.pt", option, path)
        return last
    raise GeosegError(
        f"{option}='{path}' is a folder with no best.pt or last.pt; give the folder of a geoseg train run "
        "that wrote one, or a checkpoint file"
    )


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", missing_fix: str = MISSING_FIX
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; every failure is one :class:`GeosegError` line
    (``missing_fix`` ends the one for a file that is not there)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise GeosegError(f"checkpoint '{path}' does not exist; {missing_fix}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        detail = unpickling_detail(err)
        if "GLOBAL" in detail:  # a pickled object or function: never run (untrusted code)
            raise GeosegError(
                f"checkpoint '{path}' holds pickled objects or code, which geoseg never loads "
                f"(torch.load(weights_only=True) refused it: {detail}); use a checkpoint geoseg wrote"
            ) from None
        raise GeosegError(
            f"checkpoint '{path}' is truncated or corrupt ({detail}); use another checkpoint "
            "(e.g. best.pt) or start a new run"
        ) from None
    except Exception as err:  # torch's readers raise RuntimeError, EOFError, KeyError, IndexError, ...
        raise GeosegError(
            f"checkpoint '{path}' is truncated or corrupt ({first_line(err)}); use another checkpoint "
            "(e.g. best.pt) or start a new run"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise GeosegError(f"'{path}' is not a geoseg training checkpoint (no format={FORMAT!r} entry)")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise GeosegError(f"checkpoint '{path}' lacks {', '.join(missing)}; it cannot resume a run")
    if int(state["version"]) > VERSION:
        raise GeosegError(
            f"checkpoint '{path}' has format version {state['version']}; this geoseg reads up to {VERSION}"
        )
    return state


def check_same_model(saved: Mapping[str, Any], current: Mapping[str, Any], path: str) -> None:
    """Fail with the differing fields when a checkpoint was trained with another model or data layout."""
    keys = ["arch", "encoder", "encoder_depth", "in_channels", "classes", "norm", "bands"]
    if "decoder" in saved and saved.get("arch") == current.get("arch"):  # widths of the same decoder
        keys.append("decoder")
    diff = [f"{k}: {saved.get(k)!r} vs {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    if diff:
        raise GeosegError(
            f"checkpoint '{path}' was trained with another model ({'; '.join(diff)}); "
            "resume with the same model/encoder/norm/data options or start a new run"
        )


def gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (a collective: all ranks call it)."""
    mine = rng_state(info.device)
    if not info.enabled:
        return [mine]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, mine)
    return states


def save_checkpoints(run: Run, best: bool = True) -> None:
    """``last.pt`` every time, and ``best.pt`` (weights only: for inference and fine-tuning, not
    resuming) when this epoch has the best val mIoU; rank 0 writes.

    ``best=False`` for a checkpoint inside an epoch (preemption): its weights were never validated.
    Non-finite weights are never written (see :func:`~geoseg.engine.nonfinite.check_weights_finite`).
    """
    check_weights_finite(run.model, run.state, run.run_dir)
    rng = gather_rng(run.info)
    if not run.info.is_main:
        return
    model, state = run.model, run.state
    weights = {
        "model": model.state_dict(), "meta": model.meta, "epoch": state.epoch, "step": state.step,
        "progress": json_safe(asdict(state)), "config": OmegaConf.to_container(run.cfg, resolve=True),
        "stats": asdict(run.stats), "classes": run.classes, "norm_summary": model.meta["norm_summary"],
        "world_size": run.info.world_size,
    }  # fmt: skip
    save_checkpoint(os.path.join(run.run_dir, "last.pt"), {
        **weights, "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None, "rng": rng,
    })  # fmt: skip
    if best and state.best_epoch == state.epoch:
        save_checkpoint(os.path.join(run.run_dir, "best.pt"), {**weights, **WEIGHTS_ONLY})


def restore(run: Run, path: str) -> Progress:
    """Load model, optimizer, scheduler, scaler and RNG states from ``path``; returns its counters."""
    # on the CPU: load_state_dict copies onto the model's device
    saved = load_checkpoint(path, missing_fix="check trainer.resume (auto finds RUN/last.pt) or drop it")
    check_same_model(saved["meta"], run.model.meta, path)
    if saved.get("weights_only") or not saved["optimizer"]:
        folder = os.path.dirname(path) or "."
        raise GeosegError(
            f"checkpoint '{path}' holds weights only (no optimizer, schedule or RNG state), so it cannot "
            f"resume a run; resume from {os.path.join(folder, 'last.pt')}, or fine-tune from it with "
            f"encoder.weights={path} in a new run"
        )
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    planned = run.total_steps
    run.scheduler.load_state_dict(saved["scheduler"])
    saved_total = getattr(run.scheduler.lr_lambdas[0], "total_steps", planned)
    if saved_total != planned:
        log.warning(
            "'%s' has an LR schedule of %d steps and this config gives %d; the run continues on the "
            "checkpoint's curve (start a new run to change the schedule)", path, saved_total, planned,
        )  # fmt: skip
    if run.scaler.is_enabled() and saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    rng = saved["rng"]
    if len(rng) == run.info.world_size:
        set_rng_state(rng[run.info.rank], run.info.device)
    else:
        log.warning("'%s' has the RNG states of %d ranks and this run has %d: random streams start afresh",
                    path, len(rng), run.info.world_size)  # fmt: skip
    counters = dict(saved.get("progress") or {})
    if counters.get("best_miou") is None:
        counters["best_miou"] = -math.inf
    state = Progress(**{**counters, "epoch": int(saved["epoch"]), "step": int(saved["step"])})
    log.info("resumed from %s %s", path, state.position())
    return state
