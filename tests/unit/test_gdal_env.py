"""GDAL defaults: the block cache is sized in megabytes per worker (rasterio takes bytes)."""

import pytest
from rasterio.env import get_gdal_config

from geoseg.data.gdal_env import configure_gdal, gdal_defaults


def test_cache_budget_is_split_across_workers_in_bytes():
    assert gdal_defaults(workers=2)["GDAL_CACHEMAX"] == 512 * 2**20
    assert gdal_defaults(workers=64)["GDAL_CACHEMAX"] == 64 * 2**20  # floor


def test_configure_gdal_applies_defaults_unless_the_environment_sets_them(monkeypatch):
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    monkeypatch.delenv("GDAL_DISABLE_READDIR_ON_OPEN", raising=False)
    monkeypatch.delenv("GDAL_NUM_THREADS", raising=False)
    applied = configure_gdal(workers=4)
    assert int(get_gdal_config("GDAL_CACHEMAX")) == 256 * 2**20
    assert get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") == "EMPTY_DIR"
    assert set(applied) == {"GDAL_CACHEMAX", "GDAL_DISABLE_READDIR_ON_OPEN", "GDAL_NUM_THREADS"}
    monkeypatch.setenv("GDAL_CACHEMAX", "100")
    assert "GDAL_CACHEMAX" not in configure_gdal(workers=4)


@pytest.fixture(autouse=True)
def _restore(restore_gdal_config):
    """Every test here sets GDAL options in this process: put them back."""
