"""The ``data`` config's plain options, checked before any file is opened, and the paths they name
(data root, cache folder, statistics file, scene index)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from geoseg.config import is_real
from geoseg.data.chip_groups import chips_per_block
from geoseg.data.class_balance import SAMPLING
from geoseg.data.demo import make_demo_data
from geoseg.data.labels import ClassMap, check_classes
from geoseg.data.loader import check_loader_options
from geoseg.data.masks import label_codes
from geoseg.data.remote import is_remote
from geoseg.data.scene_index import SceneIndex
from geoseg.data.stac_options import stac_given
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


def _number(cfg: Mapping[str, Any], key: str, kind: type = int) -> int | float:
    value = cfg.get(key)
    if not is_real(value) or (kind is int and value != int(value)):  # 64.0 passes as a whole number
        raise GeosegError(
            f"data.{key} must be {'a whole number' if kind is int else 'a number'}, got {value!r}."
        )
    return kind(value)


def _nodata_value(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_data_config(cfg: Mapping[str, Any]) -> None:
    """Catch impossible data options before any file is opened."""
    if _number(cfg, "chip_size") < 1:
        raise GeosegError(f"data.chip_size must be a positive number of pixels, got {cfg['chip_size']}.")
    if not 0.0 <= _number(cfg, "max_nodata_fraction", float) <= 1.0:
        raise GeosegError(f"data.max_nodata_fraction must be in [0, 1], got {cfg['max_nodata_fraction']}.")
    if _number(cfg, "batch_size") < 1:
        raise GeosegError(f"data.batch_size must be >= 1 (it is per GPU), got {cfg['batch_size']}.")
    if not -(2**63) <= _number(cfg, "ignore_index") < 2**63:
        raise GeosegError(f"data.ignore_index={cfg['ignore_index']} does not fit a 64-bit integer; use 255.")
    if cfg.get("val_stride") is not None and _number(cfg, "val_stride") < 1:
        raise GeosegError(f"data.val_stride must be >= 1 px (or null = chip_size), got {cfg['val_stride']}.")
    if "chips_per_epoch" in cfg and _number(cfg, "chips_per_epoch") < 1:
        raise GeosegError(f"data.chips_per_epoch must be >= 1, got {cfg['chips_per_epoch']}.")
    check_loader_options(cfg)
    check_sampling(cfg)
    bands = cfg.get("bands")
    if bands is not None and (isinstance(bands, str) or not isinstance(bands, Iterable) or not list(bands)):
        raise GeosegError(
            f"data.bands must be a list of 1-based indices or band names (or null), got {bands!r}."
        )
    classes = check_classes(cfg.get("classes"), "data.classes")
    for band in bands or []:
        if isinstance(band, (float, bool)):
            raise GeosegError(f"data.bands: {band!r} is not a band; use 1-based whole numbers or band names.")
    if 0 <= int(cfg["ignore_index"]) < len(classes):
        raise GeosegError(
            f"data.ignore_index={cfg['ignore_index']} collides with a class index "
            f"(0..{len(classes) - 1}); use 255."
        )
    nodata = cfg.get("nodata")
    if not (_nodata_value(nodata) or (isinstance(nodata, Sequence) and not isinstance(nodata, str)
                                      and nodata and all(_nodata_value(v) for v in nodata))):  # fmt: skip
        raise GeosegError(
            f"data.nodata must be a number, a list of one number (or null) per band, or null, got {nodata!r}."
        )
    if not isinstance(cfg.get("align_chips", False), bool):
        raise GeosegError(f"data.align_chips must be true or false, got {cfg['align_chips']!r}.")
    chips_per_block(cfg)
    if cfg.get("unknown_labels", "error") not in ("error", "ignore"):
        raise GeosegError(f"data.unknown_labels must be 'error' or 'ignore', got '{cfg['unknown_labels']}'.")


def data_root(cfg: Mapping[str, Any]) -> str:
    """``data.root`` as an absolute path, generating the demo scenes there first when asked to.

    Only the folder named by ``data.demo`` is ever generated, so pointing ``data.root`` at a
    missing folder of your own fails instead of filling it with demo scenes.
    """
    if is_remote(cfg["root"]):  # a URL prefix the split patterns are joined to
        return str(cfg["root"]).rstrip("/")
    root = os.path.abspath(os.path.expanduser(str(cfg["root"])))
    elsewhere = bool(cfg.get("manifest")) or stac_given(cfg.get("stac")) or _remote_splits(cfg)
    demo = cfg.get("demo")
    if demo and os.path.abspath(os.path.expanduser(str(demo))) == root and not os.path.exists(root) and (
        not elsewhere
    ):  # fmt: skip
        log.info("demo data missing: generating it under %s", root)
        make_demo_data(root)
    if not os.path.isdir(root) and not elsewhere:  # scenes listed elsewhere need no folder
        raise GeosegError(f"data.root '{root}' is not a folder; point data.root at your scenes.")
    return root


def _remote_splits(cfg: Mapping[str, Any]) -> bool:
    """Whether every split names its images by URL (so ``data.root`` need not be a folder)."""
    splits = [s for s in (cfg.get("splits") or {}).values() if s]
    return bool(splits) and all(is_remote(s.get("images")) or s.get("stac") for s in splits)


def class_map_from(cfg: Mapping[str, Any]) -> ClassMap:
    return ClassMap(label_codes(cfg["classes"]), ignore_index=int(cfg["ignore_index"]))


def check_sampling(cfg: Mapping[str, Any]) -> tuple[str, float]:
    """``data.sampling`` and ``data.class_power``, checked."""
    sampling = cfg.get("sampling") or "area"
    if sampling not in SAMPLING:
        raise GeosegError(f"data.sampling must be one of {list(SAMPLING)}, got '{sampling}'.")
    power = cfg.get("class_power", 0.5)
    if not is_real(power) or not 0 <= power <= 2:
        raise GeosegError(
            f"data.class_power must be a number in [0, 2] (1 = every class equal), got {power!r}."
        )
    return sampling, float(power)


def stats_path(cfg: Mapping[str, Any], key: str) -> str:
    """``data.stats_path`` as an absolute path; when null, ``stats-<key>.json`` in ``data.cache_dir``
    (``key``: :func:`geoseg.data.stats.stats_key` of the train scenes), so statistics of other bands,
    regions or files never replace each other."""
    if cfg.get("stats_path"):
        return os.path.abspath(os.path.expanduser(str(cfg["stats_path"])))
    return os.path.join(cache_dir(cfg), f"stats-{key}.json")


def scene_index(cfg: Mapping[str, Any]) -> SceneIndex | None:
    """The scene index in ``data.cache_dir`` (``None`` with ``data.index=false``)."""
    if not cfg.get("index", True):
        return None
    return SceneIndex(os.path.join(cache_dir(cfg), "scene-index.json"))


def cache_dir(cfg: Mapping[str, Any]) -> str:
    """``data.cache_dir`` (default ``outputs/cache``) as an absolute path."""
    path = os.path.abspath(os.path.expanduser(str(cfg.get("cache_dir") or "outputs/cache")))
    if os.path.exists(path) and not os.path.isdir(path):
        raise GeosegError(f"data.cache_dir='{path}' is a file, not a folder; name a folder (made when "
                          "missing) for the statistics and the scene index")  # fmt: skip
    return path
