"""GDAL and DataLoader defaults sized to the machine: block cache, decoding threads, worker count."""

from __future__ import annotations

import os

from rasterio.env import set_gdal_config

CACHE_BUDGET_MB = 1024
MAX_AUTO_WORKERS = 8


def cpus_per_rank() -> int:
    """CPU cores this process may use, shared among the ranks on this node (``LOCAL_WORLD_SIZE``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def auto_workers(cpus: int | None = None) -> int:
    """``data.num_workers: auto``: one core per rank stays with the training process, the rest read chips.

    At most :data:`MAX_AUTO_WORKERS`; 0 (read in the training process) on a single core.
    """
    cpus = cpus_per_rank() if cpus is None else cpus
    return max(0, min(MAX_AUTO_WORKERS, cpus - 1))


def gdal_defaults(workers: int, cpus: int | None = None, threads: int | None = None) -> dict[str, str | int]:
    """Options for each reading process; ``workers`` is how many processes share the cache and cores.

    ``GDAL_NUM_THREADS`` lets GDAL decode the several blocks one chip read touches in parallel:
    the rank's cores divided among its readers, so readers never oversubscribe them. Apply it in
    DataLoader workers only: GDAL's thread pool does not survive ``fork``, so a process that used
    it and then forks workers leaves them waiting forever on the pool (seen with 0 then 2 workers
    in one process). With ``num_workers: 0`` reads stay single-threaded. ``threads`` (``data.read_threads``)
    replaces the computed count.
    """
    cpus = cpus_per_rank() if cpus is None else cpus
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        # bytes per process: rasterio's set_gdal_config passes an int to GDALSetCacheMax64 (bytes),
        # unlike the environment variable, where a small number means megabytes
        "GDAL_CACHEMAX": max(64, CACHE_BUDGET_MB // max(1, workers)) * 2**20,
        "GDAL_NUM_THREADS": str(threads or max(1, cpus // max(1, workers))),
    }


def configure_gdal(workers: int, threads: int | None = None) -> dict[str, str | int]:
    """Apply :func:`gdal_defaults` in this process, leaving alone what the user set in the environment
    (but for ``GDAL_NUM_THREADS`` when ``threads`` is given: the config's explicit value wins)."""
    applied: dict[str, str | int] = {}
    for key, value in gdal_defaults(workers, threads=threads).items():
        if key in os.environ and not (key == "GDAL_NUM_THREADS" and threads):  # GDAL reads the environment
            continue
        set_gdal_config(key, value)
        applied[key] = value
    return applied
