"""Find the jobs of a Hydra sweep folder, what they were asked to run, and what each one wrote.

A job is a folder holding ``.hydra/overrides.yaml``. It **succeeded** when it wrote ``summary.json``;
otherwise it **failed** (or is still running, or was killed), and the last error line of its log is
kept as the reason. The sweep's ``multirun.yaml`` says which jobs were asked for, so jobs that never
started are reported as **missing**.
"""

from __future__ import annotations

import functools
import glob
import itertools
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from geoseg.config import config_dir
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


@functools.cache
def not_params() -> frozenset[str]:
    """Overrides that choose where and how a job runs, not what it trains: the folder-name exclusions of
    ``configs/hydra/train.yaml`` (their one source), but for ``seed``, a parameter the report averages."""
    hydra_cfg = OmegaConf.load(config_dir() / "hydra" / "train.yaml")
    return frozenset(str(k) for k in hydra_cfg.job.config.override_dirname.exclude_keys if k != "seed")


@dataclass
class Job:
    """One sweep job: its folder (relative to the sweep), its overrides, and its summary or its error."""

    path: str
    params: dict[str, str]
    summary: dict[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.summary is not None


@dataclass
class Sweep:
    """The jobs found under a sweep folder and the parameter sets that have no job folder."""

    root: str
    jobs: list[Job]
    missing: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if not j.ok]


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``["norm=groupnorm", "+x=1", "hydra.sweep.dir=..."]`` -> ``{"norm": "groupnorm", "x": "1"}``."""
    params = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+~")
        if sep and key not in not_params() and not key.startswith("hydra."):
            params[key] = value
    return params


ERROR_LINE = re.compile(r"\]\[ERROR\] - |^[\d\- :,]+ ERROR: ")  # Hydra's default format, geoseg's own


def last_error(job_dir: str) -> str | None:
    """The last ERROR line of the job's log (``<job name>.log``), without its timestamp and level; the
    log may be in Hydra's default format (geoseg 0.1) or geoseg's (``2026-12-02 16:40:36 ERROR: ...``)."""
    for path in sorted(glob.glob(os.path.join(job_dir, "*.log"))):
        with open(path, errors="replace") as fh:
            errors = [line.strip() for line in fh if ERROR_LINE.search(line) or line.startswith("Traceback")]
        if errors:
            return ERROR_LINE.split(errors[-1], 1)[-1]
    return None


def read_job(sweep_dir: str, overrides_file: str) -> Job:
    """The job whose ``.hydra/overrides.yaml`` is ``overrides_file``."""
    job_dir = os.path.dirname(os.path.dirname(overrides_file))
    params = parse_overrides(OmegaConf.to_container(OmegaConf.load(overrides_file)) or [])  # type: ignore[arg-type]
    job = Job(os.path.relpath(job_dir, sweep_dir), params)
    summary_path = os.path.join(job_dir, "summary.json")
    if os.path.isfile(summary_path):
        try:
            with open(summary_path) as fh:
                job.summary = json.load(fh)
        except (OSError, ValueError) as err:
            job.error = f"unreadable summary.json: {err}"
    else:
        job.error = last_error(job_dir) or "no summary.json (failed, killed or still running)"
    return job


def expected_params(multirun_yaml: str) -> list[dict[str, str]]:
    """Every parameter set the sweep asked for: ``hydra.sweeper.params`` x the command line's sweeps."""
    cfg = OmegaConf.load(multirun_yaml)
    spec = dict(OmegaConf.to_container(cfg.hydra.sweeper.get("params") or {}, resolve=False))  # type: ignore[arg-type]
    for item in cfg.hydra.overrides.get("task") or []:
        key, sep, value = str(item).partition("=")
        if sep:
            spec[key.lstrip("+~")] = value  # the command line wins, as in Hydra's basic sweeper
    axes = []
    for override in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in spec.items()]):
        key = override.get_key_element().lstrip("+~")
        if key in not_params() or key.startswith("hydra."):
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        axes.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def collect(sweep_dir: str) -> Sweep:
    """Read every job under ``sweep_dir`` and compare them with what ``multirun.yaml`` asked for."""
    root = os.path.abspath(os.path.expanduser(sweep_dir))
    if not os.path.isdir(root):
        raise GeosegError(f"report: '{sweep_dir}' is not a folder; give a sweep folder (hydra.sweep.dir)")
    files = sorted(
        glob.glob(os.path.join(glob.escape(root), "**", ".hydra", "overrides.yaml"), recursive=True)
    )
    jobs = [read_job(root, f) for f in files]
    if not jobs:
        raise GeosegError(
            f"report: no sweep jobs under '{sweep_dir}' (no */.hydra/overrides.yaml); "
            "run `geoseg train -m sweep=...` first or give its hydra.sweep.dir"
        )
    sweep = Sweep(root, jobs)
    multirun = os.path.join(root, "multirun.yaml")
    if os.path.isfile(multirun):
        have = [j.params for j in jobs]
        sweep.missing = [p for p in expected_params(multirun) if not any(matches(p, h) for h in have)]
    return sweep


def matches(expected: Mapping[str, str], params: Mapping[str, str]) -> bool:
    """Whether a job's ``params`` carry every expected key with the same value."""
    return all(params.get(k) == v for k, v in expected.items())


def varying_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs between jobs, in first-seen order."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.params))
    return [k for k in keys if len({j.params.get(k) for j in jobs}) > 1]
