"""GDAL defaults for chip reading: no directory listing on open, a block cache sized to the workers."""

from __future__ import annotations

import os

from rasterio.env import set_gdal_config

CACHE_BUDGET_MB = 1024


def gdal_defaults(workers: int) -> dict[str, str | int]:
    """Options each process should use; ``workers`` is how many reader processes share the budget."""
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        # bytes per process: rasterio's set_gdal_config passes an int to GDALSetCacheMax64 (bytes),
        # unlike the environment variable, where a small number means megabytes
        "GDAL_CACHEMAX": max(64, CACHE_BUDGET_MB // max(1, workers)) * 2**20,
    }


def configure_gdal(workers: int) -> dict[str, str | int]:
    """Apply :func:`gdal_defaults` in this process, leaving alone what the user set in the environment."""
    applied: dict[str, str | int] = {}
    for key, value in gdal_defaults(workers).items():
        if key in os.environ:  # GDAL reads the environment itself
            continue
        set_gdal_config(key, value)
        applied[key] = value
    return applied
