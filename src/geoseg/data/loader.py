"""The DataLoader of a split: worker count, pinning and prefetch sized to the machine, GDAL set per worker."""

from __future__ import annotations

import functools
import signal
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from geoseg.config import flag, is_whole
from geoseg.data.dataset import ChipDataset, collate_batch
from geoseg.data.gdal_env import auto_workers, configure_gdal
from geoseg.errors import GeosegError


def make_loader(
    dataset: ChipDataset, sampler: Any, cfg: Mapping[str, Any], drop_last: bool = False
) -> DataLoader:
    """A DataLoader with the data config's worker, pinning and prefetch settings.

    Training drops the last partial batch: a batch of one would break BatchNorm, and every rank
    must take the same number of steps.
    """
    workers = num_workers(cfg)
    extra = {}
    if workers > 0:
        extra = {
            "prefetch_factor": whole_number(cfg, "prefetch_factor", 2),
            "persistent_workers": flag(cfg, "persistent_workers", True, "data."),
            # reads already in flight on threads: GDAL's own decoding threads would oversubscribe the cores
            "worker_init_fn": functools.partial(
                configure_gdal_worker,
                threads=read_threads(cfg) or (1 if getattr(dataset, "reads_in_flight", 1) > 1 else None),
            ),
        }
    return DataLoader(
        dataset,
        batch_size=int(cfg["batch_size"]),
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory(cfg),
        drop_last=drop_last,
        collate_fn=collate_batch,
        **extra,
    )


def check_loader_options(cfg: Mapping[str, Any]) -> None:
    """The DataLoader options of ``data`` checked before any file is opened (one line naming a bad one)."""
    num_workers(cfg)
    read_threads(cfg)
    reads_in_flight(cfg)
    pin_memory(cfg)
    whole_number(cfg, "prefetch_factor", 2)
    whole_number(cfg, "max_open_files", 64)
    flag(cfg, "persistent_workers", True, "data.")


def whole_number(cfg: Mapping[str, Any], key: str, default: int) -> int:
    """``data.<key>``, a whole number >= 1."""
    value = cfg.get(key, default)
    if not is_whole(value) or value < 1:
        raise GeosegError(f"data.{key} must be a whole number >= 1 (default {default}), got {value!r}.")
    return value


def num_workers(cfg: Mapping[str, Any]) -> int:
    """``data.num_workers``: a count, or ``auto`` (this rank's cores but one, see :func:`auto_workers`)."""
    value = cfg.get("num_workers", 0)
    if value == "auto":
        return auto_workers()
    if not is_whole(value) or value < 0:
        raise GeosegError(f"data.num_workers must be a whole number >= 0 or 'auto', got {value!r}.")
    return value


def pin_memory(cfg: Mapping[str, Any]) -> bool:
    """``data.pin_memory``: true, false or ``auto`` (when CUDA is available)."""
    value = cfg.get("pin_memory", "auto")
    if value == "auto":
        return torch.cuda.is_available()
    if not isinstance(value, bool):
        raise GeosegError(f"data.pin_memory must be true, false or auto, got {value!r}.")
    return value


def read_threads(cfg: Mapping[str, Any]) -> int | None:
    """``data.read_threads``: GDAL decoding threads per DataLoader worker; None for ``auto`` (this
    rank's cores divided among its workers, see :func:`geoseg.data.gdal_env.gdal_defaults`)."""
    value = cfg.get("read_threads", "auto")
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GeosegError(f"data.read_threads must be a whole number >= 1 or 'auto', got {value!r}.")
    return value


REMOTE_READS_IN_FLIGHT = 16  # image and label reads of a batch of 8 at once: about one round trip a batch


def reads_in_flight(cfg: Mapping[str, Any], remote: bool = False) -> int:
    """``data.reads_in_flight``: chips of a batch each worker reads at once (threads); ``auto`` is
    :data:`REMOTE_READS_IN_FLIGHT` when a scene is ``remote`` (the reads wait on the network), else 1.
    A chip is two reads, its image and its label."""
    value = cfg.get("reads_in_flight", "auto")
    if value == "auto":
        return REMOTE_READS_IN_FLIGHT if remote else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GeosegError(f"data.reads_in_flight must be a whole number >= 1 or 'auto', got {value!r}.")
    return value


def configure_gdal_worker(worker_id: int, threads: int | None = None) -> None:
    """DataLoader ``worker_init_fn``: GDAL defaults sized to the number of workers (``threads``
    decoding threads each when given); stop signals and Ctrl-C ignored.

    SLURM signals every process of a job step. A worker that died of SIGTERM/SIGUSR1 would fail the
    DataLoader before the main process writes its preemption checkpoint (engine/preemption.py);
    workers end with the main process anyway.
    """
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):  # Ctrl-C reaches the workers too
        signal.signal(sig, signal.SIG_IGN)
    info = torch.utils.data.get_worker_info()
    configure_gdal(workers=info.num_workers if info else 1, threads=threads)
