"""``geoseg --version``: geoseg's version and those of the libraries a bug report needs, in well under a
second: the versions are read from the installed packages' metadata, not by importing torch and smp (which
takes seconds). Only GDAL's version needs rasterio itself (a quarter of a second)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os


def distribution_version(name: str) -> str:
    """The installed version of distribution ``name`` (``not installed`` when it is missing)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def torch_version() -> str:
    """torch's version with its build tag (``2.5.1+cu124``), read from ``torch/version.py`` without
    importing torch; the metadata's version (no build tag) when that file cannot be read."""
    try:
        spec = importlib.util.find_spec("torch")
        folder = (spec.submodule_search_locations or [])[0] if spec else None
        path = os.path.join(folder, "version.py") if folder else ""
        file_spec = importlib.util.spec_from_file_location("geoseg_torch_version", path)
        module = importlib.util.module_from_spec(file_spec)  # type: ignore[arg-type]
        file_spec.loader.exec_module(module)  # type: ignore[union-attr]
        return str(module.__version__)
    except Exception:  # an unusual install: the version without its build tag is still right
        return distribution_version("torch")


def gdal_version() -> str:
    """The GDAL rasterio was built with (rasterio must be imported to ask it)."""
    try:
        import rasterio
    except ImportError:
        return "not installed"
    return str(rasterio.__gdal_version__)


def version() -> str:
    """``geoseg 0.1.0 (torch 2.5.1+cu124, segmentation-models-pytorch 0.6.0, rasterio 1.4.3, GDAL 3.9.3)``."""
    from geoseg import __version__

    smp, rasterio = (distribution_version(name) for name in ("segmentation-models-pytorch", "rasterio"))
    return (
        f"geoseg {__version__} (torch {torch_version()}, segmentation-models-pytorch {smp}, "
        f"rasterio {rasterio}, GDAL {gdal_version()})"
    )
