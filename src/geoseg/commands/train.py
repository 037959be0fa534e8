"""``geoseg train``: train a model on the configured data; outputs go to Hydra's run folder.

After a finished run, rank 0 keeps the checkpoints ``trainer.keep_checkpoints`` asks for, points
``trainer.latest_link`` at the run (not for sweep jobs) and prints where the checkpoint is and the
command that uses it. A run whose validations never scored a pixel wrote no ``best.pt``: it fails in
one line on every rank (after ``summary.json``), never with status 0.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from geoseg.engine.fit import fit
from geoseg.engine.preemption import INTERRUPTED
from geoseg.engine.run_folder import RESUME_RECORD, check_run_folder
from geoseg.engine.run_outputs import (
    check_best_written,
    check_keep,
    link_latest,
    next_steps,
    prune_checkpoints,
)

log = logging.getLogger(__name__)


def say_resumed(record: str) -> None:
    """Where a resumed run's options come from (see :mod:`geoseg.resume`), when this job resumes one."""
    if record.startswith(RESUME_RECORD):
        log.info("continuing the run with the options it was started with (its .hydra/config.yaml), in its "
                 "working folder %s; this resume's options are in %s/", os.getcwd(), record)  # fmt: skip


def run(cfg: DictConfig) -> dict[str, Any]:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    keep = check_keep(str(cfg.trainer.get("keep_checkpoints", "all")))
    check_run_folder(run_dir, cfg.trainer.get("resume"), "run folder")  # a sweep job's, too
    say_resumed(str(hydra_cfg.output_subdir or ""))
    result = fit(cfg, run_dir)
    if result.get("preempted") == "SIGINT":  # Ctrl-C: last.pt is written; say so with the shell's status
        raise SystemExit(INTERRUPTED)
    if not result.get("preempted"):
        check_best_written(result, run_dir)  # every rank: none ends with status 0
    if result.get("preempted") or os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) != "0":
        return result
    prune_checkpoints(run_dir, keep)
    if hydra_cfg.mode == RunMode.MULTIRUN:  # a sweep job: `geoseg report` reads its folder
        return result
    link = link_latest(run_dir, cfg.trainer.get("latest_link"))
    kept = [name for name in ("best.pt", "last.pt") if os.path.exists(os.path.join(run_dir, name))]
    series = any(
        "{date}" in str((spec or {}).get("images")) for spec in (cfg.data.get("splits") or {}).values()
    )
    for line in next_steps(run_dir, link, kept, series).splitlines():
        log.info("%s", line)
    return result
