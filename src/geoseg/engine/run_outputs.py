"""What a finished training run leaves: which checkpoints stay, the ``latest`` link, and the next step.

- ``trainer.keep_checkpoints``: ``all`` keeps ``best.pt`` and ``last.pt``; ``best`` deletes
  ``last.pt`` (the resume state, 3x the size) once the run has finished; ``last`` deletes ``best.pt``;
  ``none`` deletes both (a sweep job whose metrics are all that matter).
- ``trainer.latest_link`` (``outputs/train/latest``): a symlink to the newest finished run, replaced
  atomically, so ``outputs/train/latest/best.pt`` is always a complete checkpoint of a run that
  finished (a run that failed at start-up never moves it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from geoseg.errors import GeosegError

log = logging.getLogger(__name__)

KEEP = {"all": (), "best": ("last.pt",), "last": ("best.pt",), "none": ("best.pt", "last.pt")}


def check_keep(keep: str) -> str:
    """``trainer.keep_checkpoints`` as one of :data:`KEEP`, or a one-line error."""
    if keep not in KEEP:
        raise GeosegError(f"trainer.keep_checkpoints={keep!r} is not one of {', '.join(KEEP)}")
    return keep


def check_best_written(summary: Mapping[str, Any], run_dir: str) -> None:
    """Fail in one line when a finished run wrote no ``best.pt``: no validation gave a val mIoU (NaN
    every time). Every rank has the same (all-reduced) metrics, so every rank fails; ``summary.json``
    and ``last.pt`` are written by then, so nothing is lost."""
    if summary.get("best_epoch") is not None:
        return
    raise GeosegError(
        "no validation of this run scored a pixel (val mIoU NaN every time: no val chip held a pixel both "
        "labelled and valid in its image), so it wrote no best.pt; check the val split's labels, region and "
        f"data.nodata (summary.json and last.pt are in {shown_path(run_dir)})"
    )


def prune_checkpoints(run_dir: str, keep: str) -> list[str]:
    """Delete the checkpoints ``keep`` does not keep; returns the names deleted."""
    removed = []
    for name in KEEP[check_keep(keep)]:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)
            removed.append(name)
    return removed


def link_latest(run_dir: str, link: str | None) -> str | None:
    """Point ``link`` at ``run_dir`` (a relative symlink, swapped in atomically); None when off or when
    the filesystem has no symlinks (a warning: the run folder is printed anyway)."""
    if not link:
        return None
    link = os.path.abspath(link)
    if os.path.exists(link) and not os.path.islink(link):
        log.warning("trainer.latest_link: '%s' exists and is not a link; left alone", link)
        return None
    os.makedirs(os.path.dirname(link), exist_ok=True)
    tmp = f"{link}.tmp-{os.getpid()}"
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(os.path.relpath(os.path.abspath(run_dir), os.path.dirname(link)), tmp)
        os.replace(tmp, link)
    except OSError as err:
        log.warning("trainer.latest_link: could not link '%s' to this run (%s)", link, err.strerror or err)
        return None
    return link


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it is under it, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith("..") else relative


def next_steps(run_dir: str, link: str | None, kept: list[str], series: bool = False) -> str:
    """The end-of-run lines: where the checkpoint is and the command that uses it (``series``: the
    model takes a series, so the input is a ``{date}`` pattern)."""
    folder = shown_path(link or run_dir)
    if "best.pt" in kept:
        checkpoint = os.path.join(folder, "best.pt")
        scene = "'input=\"SCENE_{date}.tif\"'" if series else "input=SCENE.tif"
        return (
            f"checkpoint: {checkpoint}\n"
            f"next: geoseg predict checkpoint={checkpoint} {scene} output=PRED.tif quicklook=true"
        )
    if "last.pt" in kept:
        return f"checkpoint: {os.path.join(folder, 'last.pt')} (trainer.keep_checkpoints=last)"
    return f"no checkpoint kept (trainer.keep_checkpoints=none); metrics in {folder}/summary.json"
