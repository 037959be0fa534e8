"""``geoseg <command> [hydra overrides]``: one Hydra app per command of ``geoseg/commands``, by name."""

from __future__ import annotations

import contextlib
import difflib
import errno
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from geoseg.command_help import command_help
from geoseg.commands import command_table
from geoseg.config import config_dir
from geoseg.errors import GeosegError, user_message
from geoseg.io import ensure_writable_dir
from geoseg.overrides import check_overrides, split_config_dir
from geoseg.resume import resumed_job, resumed_run
from geoseg.versions import version

log = logging.getLogger(__name__)

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)

COMMANDS = command_table()  # read from geoseg/commands/*.py (see geoseg.commands)

USAGE = """usage: geoseg <command> [hydra overrides] [-m] [--cfg job --resolve] [--help] | geoseg --version

commands:
{commands}

Every command is a Hydra app: override any option as key=value (e.g. data.chip_size=128),
pick a config group option as group=option (e.g. aug=geometric), and see its options with
`geoseg <command> --help` or the resolved config with `geoseg <command> --cfg job --resolve`.
The shipped configs are in {configs}; your own (a data config of your scenes, say)
go in a folder of the same layout: `geoseg train --config-dir myconf data=mydata`.
"""

HELP_FLAGS = ("-h", "--help")
COMPLETION_FLAGS = ("-sc", "--shell-completion")


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines), configs=config_dir())


def print_paged(text: str) -> None:
    """Print ``text``; a pager or ``head`` closing the pipe early is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit


def unknown_command(name: str) -> str:
    """One line for a mistyped command, with the closest command when there is one."""
    close = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; commands: {', '.join(COMMANDS)}"
    return f"geoseg: error: unknown command '{name}'{hint} (geoseg --help lists them)"


class SweepJobError(CompactHydraException):
    """A user error in one multirun job: Hydra marks the job failed, runs the others, then prints this."""


def hydra_app(config_name: str, task: Callable[[DictConfig], object]) -> Callable[[], object]:
    """Wrap ``task`` as a Hydra main whose user errors print one line and exit with status 2.

    In a multirun the error goes to the job's log and the job fails without stopping the sweep;
    Hydra prints the first failure in one line at the end and exits with status 1.
    """

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    def app(cfg: DictConfig) -> object:
        try:
            try:
                return task(cfg)
            except OSError as os_err:  # a write no geoseg writer wrapped (a library's): still one line
                raise disk_error(os_err) from None
            except InstantiationException as inst_err:  # a config object's own check, wrapped by Hydra
                if isinstance(inst_err.__cause__, GeosegError):
                    raise inst_err.__cause__ from None
                raise
        except GeosegError as err:
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode == RunMode.MULTIRUN:
                log.error("geoseg: error: %s", user_message(err))  # into the job's log, for `geoseg report`
                job = hydra_cfg.runtime.output_dir
                raise SweepJobError(f"geoseg: error in sweep job {job}: {user_message(err)}") from None
            print(f"geoseg: error: {user_message(err)}", file=sys.stderr)
            raise SystemExit(2) from None

    return app


def disk_error(err: OSError) -> OSError | GeosegError:
    """A full disk, quota or read-only filesystem as a one-line error naming the file; else ``err``."""
    if err.errno not in DISK_ERRNOS:
        return err
    where = f" '{err.filename}'" if err.filename else ""
    return GeosegError(f"could not write{where} ({err.strerror}); free disk space or choose another folder")


def positional_args(name: str, args: list[str]) -> list[str]:
    """``geoseg report DIR`` -> ``geoseg report dir=DIR``: a command's first bare argument, if any."""
    key = COMMANDS[name].positional if name in COMMANDS else None
    if key and args and "=" not in args[0] and not args[0].startswith("-"):
        return [f"{key}={args[0]}", *args[1:]]
    return args


def check_output_folder(args: list[str]) -> None:
    """Hydra creates ``hydra.run.dir`` (``hydra.sweep.dir`` with -m) before geoseg runs and reports a
    failure as a traceback: prove a folder given on the command line is writable first, in one line."""
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = [a.removeprefix(key) for a in args if a.startswith(key)]
    if given and "${" not in given[-1]:
        folder = given[-1].strip("'\"")
        sweep_mark = os.path.join(folder, "multirun.yaml")
        if multirun and os.path.isdir(folder) and os.listdir(folder) and not os.path.exists(sweep_mark):
            raise GeosegError(f"hydra.sweep.dir='{folder}' holds files and no sweep (multirun.yaml); name a "
                              "new or empty folder, or the folder of a sweep to add jobs to")  # fmt: skip
        ensure_writable_dir(folder, "sweep folder" if multirun else "run folder")


def check_train_folder(cfg: DictConfig) -> None:
    """Refuse a ``hydra.run.dir`` whose files a new run would replace (see :mod:`geoseg.engine.run_folder`);
    a folder named by the date and time (the default) is new."""
    from geoseg.engine.run_folder import check_run_folder

    run = OmegaConf.to_container(cfg.hydra.run, resolve=False) if "hydra" in cfg else {}
    pattern = str(run.get("dir") or "")  # type: ignore[union-attr]
    if not pattern or "${now:" in pattern:
        return
    try:
        run_dir = str(OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=True))
    except Exception:  # an interpolation only Hydra's app resolves: it runs its own check in the job
        return
    check_run_folder(os.path.abspath(run_dir), OmegaConf.select(cfg, "trainer.resume"))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``geoseg`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in (*HELP_FLAGS, "help"):
        print(usage())
        return
    if args[0] in ("--version", "-V", "version"):
        print(version())
        return
    name = args[0]
    if name not in COMMANDS:
        print(unknown_command(name), file=sys.stderr)
        raise SystemExit(2)
    command = COMMANDS[name]
    config_name = command.config
    overrides = positional_args(name, args[1:])
    if any(a in HELP_FLAGS for a in overrides):
        rest, extra = split_config_dir(overrides)
        print_paged(command_help(name, command.help, config_dir(), config_name, rest, extra))
        return
    if any(a.split("=")[0] in COMPLETION_FLAGS for a in overrides):
        print(
            "geoseg: error: shell completion is not available: Hydra's -sc completes `python app.py`, not "
            f"`geoseg {name}`; `geoseg {name} --help` lists the options",
            file=sys.stderr,
        )
        raise SystemExit(2)
    task = importlib.import_module(command.module).run
    from rasterio.errors import NotGeoreferencedWarning  # loaded by the command's module already

    # geoseg says it in its own words (train refuses a file without CRS; predict warns, or carries GCPs)
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    try:
        with contextlib.ExitStack() as stack:
            primary_dir = None
            run_dir = resumed_run(overrides) if name == "train" else None
            if run_dir:  # the run's own saved config, in its own working folder (see geoseg.resume)
                job = stack.enter_context(resumed_job(run_dir, overrides))
                config_name, primary_dir, overrides = job.config_name, job.config_dir, job.overrides
            sys.argv = [f"geoseg {name}", *(["--config-dir", primary_dir] if primary_dir else []), *overrides]
            composed = check_overrides(name, config_name, overrides, primary_dir)  # a typo: one line
            check_output_folder(overrides)
            if name == "train" and composed is not None:  # before Hydra writes its .hydra/ files into it
                check_train_folder(composed)
            hydra_app(config_name, task)()
    except GeosegError as err:  # raised while composing (e.g. configs not found)
        print(f"geoseg: error: {user_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which checkpoints first): no traceback
        print(f"geoseg: interrupted (Ctrl-C) during {name}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        stop_workers()


def stop_workers() -> None:
    """Kill DataLoader workers still alive at exit (after an error they may be blocked on a full queue).

    They ignore SIGTERM (see :func:`geoseg.data.loader.configure_gdal_worker`), so the DataLoader's own
    ``terminate()`` cannot end them and multiprocessing's exit handler would wait for them forever.
    torch's SIGCHLD handler is put back to the default first: it would turn their deaths into a
    ``RuntimeError`` raised inside ``join`` (exit status 1 and a traceback instead of the error line).
    """
    children = multiprocessing.active_children()
    if not children:
        return
    if threading.current_thread() is threading.main_thread():
        # torch's SIGCHLD handler raises "DataLoader worker ... is killed by signal" when one dies
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=5)


if __name__ == "__main__":
    main()
