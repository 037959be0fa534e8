"""GDAL defaults for chip reading: no directory listing on open, a block cache sized to the workers."""

from __future__ import annotations

import os

from rasterio.env import set_gdal_config

CACHE_BUDGET_MB = 1024


def gdal_defaults(workers: int) -> dict[str, str]:
    """Options each process should use; ``workers`` is how many reader processes share the budget."""
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_CACHEMAX": str(max(64, CACHE_BUDGET_MB // max(1, workers))),
    }


def configure_gdal(workers: int) -> dict[str, str]:
    """Apply :func:`gdal_defaults` without overriding what the user set in the environment."""
    applied = {}
    for key, value in gdal_defaults(workers).items():
        applied[key] = os.environ.setdefault(key, value)
        set_gdal_config(key, applied[key])
    return applied
