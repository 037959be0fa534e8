"""Whether a run folder may take a new training run: never a folder of the user's, never a kept run.

A training run writes checkpoints, ``stats.json``, ``summary.json``, ``metrics.jsonl`` and ``train.log``
into its folder (``hydra.run.dir``). So :func:`check_run_folder` refuses, before Hydra writes anything:

- a folder that holds files but no run (a data folder, the working directory): they would be replaced;
- a folder whose run finished (``summary.json``) or stopped with a checkpoint (``last.pt``, ``best.pt``),
  unless ``trainer.resume`` continues that very run (``auto``, or a checkpoint inside the folder).

An empty folder, a missing one, and one whose run failed at start-up (no checkpoint) are taken.
"""

from __future__ import annotations

import json
import os
from typing import Any

from geoseg.errors import GeosegError

RUN_MARKS = (".hydra", ".geoseg.lock")  # what every geoseg training run leaves in its folder
CHECKPOINTS = ("last.pt", "best.pt")
RESUME_RECORD = ".hydra/resume-"  # + N: Hydra's record of the N-th resume of a run (see geoseg.resume)


def continues_this_run(resume: Any, run_dir: str) -> bool:
    """Whether ``trainer.resume`` resumes the run in ``run_dir`` (``auto``, or a checkpoint in it)."""
    if resume in (None, "", False):
        return False
    if resume == "auto":
        return True
    path = os.path.abspath(os.path.expanduser(str(resume)))
    return os.path.dirname(path) == os.path.abspath(run_dir)


def shown_names(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(sorted(names)[:limit]) + more


def finished_run(run_dir: str) -> str | None:
    """``best val mIoU 0.228 at epoch 4`` of a finished run's ``summary.json``; None when there is none."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as fh:
            summary = json.load(fh)
        return f"best val mIoU {summary['best_miou']:.4f} at epoch {summary['best_epoch']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "summary.json"


def check_run_folder(run_dir: str, resume: Any, option: str = "hydra.run.dir") -> None:
    """A one-line error when a new run in ``run_dir`` would replace a file it did not write."""
    if not os.path.exists(run_dir):
        return
    if not os.path.isdir(run_dir):
        raise GeosegError(f"{option}='{run_dir}' is a file; name a new folder for the run")
    names = os.listdir(run_dir)
    if not names:
        return
    if not any(mark in names for mark in RUN_MARKS):
        raise GeosegError(
            f"{option}='{run_dir}' holds files that no geoseg run wrote ({shown_names(names)}); a run writes "
            "its checkpoints, stats.json and train.log there: name a new or empty folder"
        )
    if continues_this_run(resume, run_dir):
        return
    finished = finished_run(run_dir)
    if finished:
        raise GeosegError(
            f"{option}='{run_dir}' holds a finished run ({finished}); a new run would replace its "
            "checkpoints: choose a new folder (encoder.weights=<that run>/best.pt fine-tunes from it), or "
            "pass trainer.resume=auto to look at it"
        )
    kept = [name for name in CHECKPOINTS if name in names]
    if kept:
        raise GeosegError(
            f"{option}='{run_dir}' holds a stopped run ({', '.join(kept)}); continue it with "
            "trainer.resume=auto, or choose a new folder for a new run"
        )
