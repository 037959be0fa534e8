"""``geoseg train trainer.resume=auto hydra.run.dir=RUN``: continue the run in RUN as it was started.

The line a stopped run prints must lead back into that run, whatever the working folder and whatever
else is on the command line. So when a ``train`` command continues a run folder holding
``.hydra/config.yaml`` (:func:`resumed_run`), :func:`resumed_job` prepares the job before Hydra starts:

- the run's saved ``.hydra/config.yaml`` -- the truth of what ran, whatever the shipped configs or a
  ``--config-dir`` data config say today -- is the job's primary config (``resume.yaml`` in a temporary
  config folder, with geoseg's ``hydra: train`` settings), not the command's default config;
- the job runs in the working folder the run was started in (``hydra.runtime.cwd`` of its
  ``.hydra/hydra.yaml``), so relative paths in that config (``data.root``, ``data.cache_dir``, the
  demo folder, ``trainer.latest_link``) mean what they meant, and nothing is written where the resume
  was typed;
- options given again are checked by :func:`new_options`: those of :data:`RESUMABLE` (how the run is
  shown, logged, read and where it runs) may change; one that repeats the run's own value is dropped (a
  requeue script that reruns its start command with ``trainer.resume=auto``); any other is refused in one
  line naming it, because it would change the model, data, optimizer or LR schedule of a run half done;
- Hydra writes this job's record (its ``config.yaml``, ``hydra.yaml`` and ``overrides.yaml``) into
  ``.hydra/resume-N/`` (``hydra.output_subdir``), so the files the run was started with are never
  replaced and every resume is kept beside them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from geoseg.config import config_dir
from geoseg.engine.run_folder import RESUME_RECORD, continues_this_run
from geoseg.errors import GeosegError, first_line
from geoseg.overrides import closest_key, parse, split_config_dir

# Options that may change when a run is resumed: none changes what the run learns from (model, data,
# optimizer, LR schedule, seed). ``trainer.diagnostics`` covers its sub-options.
RESUMABLE = (
    "trainer.device", "trainer.compile", "trainer.progress", "trainer.progress_interval_s",
    "trainer.log_every", "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.latest_link",
    "trainer.tensorboard", "trainer.tensorboard_images", "trainer.max_nonfinite_steps", "trainer.diagnostics",
    "data.num_workers", "data.read_threads", "data.pin_memory", "data.prefetch_factor",
    "data.persistent_workers", "data.max_open_files",
)  # fmt: skip
CONFIG_NAME = "resume"
SCHEDULE = ("trainer.max_epochs", "trainer.max_steps")
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--info", "-i")


@dataclass(frozen=True)
class SavedRun:
    """What a run folder's ``.hydra/`` says about how the run was started."""

    run_dir: str
    config_text: str  # .hydra/config.yaml, as Hydra wrote it
    config: DictConfig
    choices: dict[str, Any]  # config group -> option (hydra.runtime.choices)
    overrides: list[str]  # .hydra/overrides.yaml
    cwd: str | None  # the working folder it was started in


def option_value(args: list[str], key: str) -> str | None:
    """The value of the last ``key=VALUE`` in ``args`` (quotes stripped), or None."""
    given = [a.removeprefix(f"{key}=") for a in args if a.startswith(f"{key}=")]
    return given[-1].strip("'\"") if given else None


def resumed_run(args: list[str]) -> str | None:
    """RUN (absolute) when the ``train`` overrides ``args`` continue the run saved in ``hydra.run.dir=RUN``
    (``trainer.resume=auto`` or a checkpoint in RUN, and RUN holding ``.hydra/config.yaml``); else None."""
    if "-m" in args or "--multirun" in args:
        return None
    folder, resume = option_value(args, "hydra.run.dir"), option_value(args, "trainer.resume")
    if not folder or "${" in folder or resume is None:
        return None
    run_dir = os.path.abspath(os.path.expanduser(folder))
    if not continues_this_run(resume, run_dir):
        return None
    return run_dir if os.path.isfile(os.path.join(run_dir, ".hydra", "config.yaml")) else None


def load_saved_run(run_dir: str) -> SavedRun:
    """Read RUN's ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml``; one line when unreadable."""
    hydra_dir = os.path.join(run_dir, ".hydra")
    path = os.path.join(hydra_dir, "config.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        config = OmegaConf.create(text)
        hydra = read_optional(os.path.join(hydra_dir, "hydra.yaml"))
        overrides = read_optional(os.path.join(hydra_dir, "overrides.yaml"))
    except Exception as err:  # OSError, YAML errors
        raise GeosegError(
            f"cannot read the saved config of the run in '{run_dir}' ({first_line(err)}); "
            "trainer.resume=auto needs its .hydra/config.yaml as the run wrote it"
        ) from None
    if not isinstance(config, DictConfig):
        raise GeosegError(f"'{path}' holds no config mapping; trainer.resume=auto cannot continue that run")
    runtime = OmegaConf.select(hydra, "hydra.runtime", default=None) if hydra is not None else None
    has_choices = runtime is not None and "choices" in runtime
    choices = OmegaConf.to_container(runtime.choices, resolve=False) if has_choices else {}
    cwd = str(runtime.cwd) if runtime and runtime.get("cwd") else None
    saved = [str(o) for o in overrides] if overrides is not None else []
    return SavedRun(run_dir, text, config, dict(choices), saved, cwd)  # type: ignore[arg-type]


def read_optional(path: str) -> Any:
    """A YAML file as an OmegaConf node, or None when it is not there."""
    return OmegaConf.load(path) if os.path.isfile(path) else None


def resumable(key: str) -> bool:
    """Whether option ``key`` may change when a run is resumed (see :data:`RESUMABLE`)."""
    return any(key == option or key.startswith(f"{option}.") for option in RESUMABLE)


def saved_value(saved: SavedRun, override: Override) -> tuple[bool, Any]:
    """(whether the run has option ``override`` at all, its value there)."""
    key = override.key_or_group
    if key in saved.choices:
        return True, saved.choices[key]
    try:
        node = OmegaConf.select(saved.config, key, default=KeyError, throw_on_missing=False)
        if node is KeyError:
            return False, None
        return True, OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception:  # an interpolation only Hydra's app resolves: no value to compare with
        return True, KeyError


def new_options(saved: SavedRun, args: list[str]) -> list[str]:
    """The overrides of ``args`` that the resumed job applies: ``trainer.resume``, :data:`RESUMABLE`
    options and Hydra's own settings. A repeat of the run's own value is dropped; any other is refused."""
    kept = []
    for override in parse(args):
        key, line = override.key_or_group, override.input_line
        if key in ("hydra.run.dir", "hydra.output_subdir"):  # resumed_job sets them
            continue
        if key == "trainer.resume" or key.startswith("hydra.") or resumable(key):
            kept.append(line)
            continue
        if line in saved.overrides:  # the start command, given again
            continue
        known, value = saved_value(saved, override)
        if not known:
            raise GeosegError(unknown_option(saved, key))
        if not override.is_delete() and value == override.value():
            continue
        raise GeosegError(refusal(saved, line, key, value))
    return kept


def unknown_option(saved: SavedRun, key: str) -> str:
    """``unknown option 'KEY'; did you mean 'NEAR'? (...)`` for the options of the saved run."""
    near = closest_key(key, OmegaConf.to_container(saved.config, resolve=False))
    hint = f"; did you mean '{near}'?" if near else ""
    return (
        f"unknown option '{key}'{hint} (the run in '{saved.run_dir}' has the options of its "
        ".hydra/config.yaml)"
    )


def refusal(saved: SavedRun, line: str, key: str, value: Any) -> str:
    """One line: ``line`` would change the run being resumed; what may change; how to change it."""
    why = "the LR schedule spans the run's steps; to train longer" if key in SCHEDULE else "to change it"
    return (
        f"{line} cannot be changed when resuming the run in '{saved.run_dir}' (it was started with "
        f"{key}={OmegaConf.to_yaml(value).strip() if isinstance(value, list | dict) else value}): "
        "trainer.resume=auto continues a run with its own options, and only run-time options "
        f"(trainer.device, trainer.progress, data.num_workers, ...) may change; {why}, start a new run in a "
        "new folder "
        f"(encoder.weights={os.path.join(saved.run_dir, 'best.pt')} fine-tunes from this one)"
    )


def next_record(run_dir: str) -> str:
    """``.hydra/resume-N``: the first free folder for this job's Hydra record."""
    number = 1
    while os.path.exists(os.path.join(run_dir, f"{RESUME_RECORD}{number}")):
        number += 1
    return f"{RESUME_RECORD}{number}"


def write_primary_config(saved: SavedRun, folder: str) -> None:
    """``folder/resume.yaml``: geoseg's training Hydra settings, then the run's saved config verbatim."""
    head = OmegaConf.to_yaml(
        {
            "defaults": [{"hydra": "train"}, "_self_"],
            "hydra": {
                "searchpath": [f"file://{config_dir()}"],
                "job": {"name": "train"},
                "output_subdir": next_record(saved.run_dir),
            },
        }
    )
    with open(os.path.join(folder, f"{CONFIG_NAME}.yaml"), "w", encoding="utf-8") as fh:
        fh.write(head + saved.config_text)


def split_flags(args: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra's flags with their values: ``--cfg job``, ``--resolve``, ...; the overrides)."""
    flags: list[str] = []
    overrides: list[str] = []
    for i, arg in enumerate(args):
        value = i > 0 and args[i - 1] in FLAGS_WITH_VALUE and "=" not in arg
        (flags if arg.startswith("-") or value else overrides).append(arg)
    return flags, overrides


@dataclass(frozen=True)
class ResumedJob:
    """The Hydra job that continues a saved run: its primary config, that config's folder, its overrides."""

    config_name: str
    config_dir: str
    overrides: list[str]


@contextlib.contextmanager
def resumed_job(run_dir: str, args: list[str]) -> Iterator[ResumedJob]:
    """The job that resumes the run in ``run_dir``, in the run's own working folder; the temporary config
    folder is removed and the working folder restored afterwards."""
    saved = load_saved_run(run_dir)
    rest, _ = split_config_dir(args)  # the saved config needs no config folder of the user's
    flags, given = split_flags(rest)
    options = new_options(saved, given)
    folder = tempfile.mkdtemp(prefix="geoseg-resume-")
    here = os.getcwd()
    try:
        write_primary_config(saved, folder)
        if saved.cwd and os.path.isdir(saved.cwd):
            os.chdir(saved.cwd)
        yield ResumedJob(CONFIG_NAME, folder, [*flags, f"hydra.run.dir={run_dir}", *options])
    finally:
        os.chdir(here)
        shutil.rmtree(folder, ignore_errors=True)
