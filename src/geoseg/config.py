"""Where the Hydra configs live: inside the installed package, or the repo's top-level ``configs/``."""

from __future__ import annotations

from pathlib import Path

from geoseg.errors import GeosegError


def config_dir() -> Path:
    """``geoseg/configs`` in a wheel install; the checkout's ``configs/`` in an editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent.parent / "configs"):
        if (candidate / "data").is_dir():
            return candidate
    raise GeosegError(f"geoseg's configs were not found next to {here}; reinstall with `pip install .`.")
