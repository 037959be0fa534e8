"""Where the Hydra configs live (inside the installed package, or the repo's top-level ``configs/``), and
config nodes as plain values."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from geoseg.errors import GeosegError


def config_dir() -> Path:
    """``geoseg/configs`` in a wheel install; the checkout's ``configs/`` in an editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent.parent / "configs"):
        if (candidate / "data").is_dir():
            return candidate
    raise GeosegError(f"geoseg's configs were not found next to {here}; reinstall with `pip install .`.")


def as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A resolved plain dict of a config node."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def flag(cfg: Mapping[str, Any], key: str, default: bool = False, prefix: str = "") -> bool:
    """``cfg[key]`` as a bool; anything but true/false (``tta=no``, ``1``) is a one-line error naming
    ``<prefix><key>``, since a non-empty string would otherwise read as true."""
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise GeosegError(f"{prefix}{key}={value!r} must be true or false")
    return value


def whole(cfg: Mapping[str, Any], key: str, minimum: int = 0, prefix: str = "", example: int = 0) -> int:
    """``cfg[key]`` as a whole number >= ``minimum``; anything else (``seed=abc``, ``seed=-1``) is one
    line naming ``<prefix><key>``."""
    value = cfg.get(key)
    if not is_whole(value) or value < minimum:
        raise GeosegError(
            f"{prefix}{key}={value!r} must be a whole number >= {minimum}, e.g. {prefix}{key}={example}"
        )
    return int(value)


def is_whole(value: Any) -> bool:
    """Whether an option's ``value`` is a whole number (``True`` is not: YAML's ``yes`` is a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether an option's ``value`` is a finite real number (not a bool, NaN or infinity)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
