"""``geoseg init-data DIR``: write a starter data config for a folder of GeoTIFFs, then check it loads."""

from __future__ import annotations

import logging
import os
import re

from omegaconf import DictConfig, OmegaConf

from geoseg.config import as_dict, config_dir, flag, is_whole
from geoseg.data.build import load_scenes
from geoseg.data.init_data import chip_size_for, draft, render
from geoseg.errors import GeosegError
from geoseg.io import atomic_write_text

log = logging.getLogger(__name__)

POSITIONAL = "root"  # `geoseg init-data X` sets root=X


def config_name(root: str, name: str | None) -> str:
    """``name=`` or the folder's name, as a config name (letters, digits, ``_``)."""
    value = name or os.path.basename(os.path.normpath(os.path.abspath(root)))
    clean = re.sub(r"\W+", "_", value).strip("_").lower()
    if not clean:
        raise GeosegError(f"init-data: name={value!r} is no usable config name; pass name=mydata")
    return clean


def check_loads(path: str) -> tuple[int, int]:
    """Read the written config over the shipped ``data/demo.yaml`` (its defaults) and inspect both
    splits' scenes as training will; returns their scene counts."""
    mine = OmegaConf.load(path)
    mine.pop("defaults", None)
    data = as_dict(OmegaConf.merge(OmegaConf.load(config_dir() / "data" / "demo.yaml"), mine))
    train, val = (len(load_scenes(data, split)) for split in ("train", "val"))
    return train, val


def run(cfg: DictConfig) -> str:
    if not cfg.get("root"):
        raise GeosegError(
            "missing the folder; usage: geoseg init-data DIR [name=NAME] [conf=conf] [val_fraction=0.2]"
        )
    root, val_fraction = str(cfg.root), cfg.val_fraction
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise GeosegError(f"init-data: val_fraction={val_fraction!r} must be a number between 0.05 and 0.5")
    name = config_name(root, cfg.get("name"))
    conf = os.path.abspath(str(cfg.conf))
    path = os.path.join(conf, "data", f"{name}.yaml")
    if os.path.exists(path) and not flag(cfg, "overwrite"):
        raise GeosegError(f"init-data: '{path}' exists; pass overwrite=true to replace it or name=OTHER")
    found = draft(root, float(val_fraction), cfg.get("images"))
    chip = cfg.get("chip_size")
    chip = chip_size_for(found.min_size, float(val_fraction)) if chip is None else chip
    if not is_whole(chip) or chip < 16:  # chip_size=0 is refused, not read as null
        raise GeosegError(f"init-data: chip_size={chip!r} must be a whole number of pixels (>= 16), or null")
    shown = os.path.relpath(conf) if not os.path.relpath(conf).startswith("..") else conf
    hint = f"geoseg stats --config-dir {shown} data={name} && geoseg train --config-dir {shown} data={name}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, render(found, val_fraction, chip, hint), "data config")
    log.info("%d images, labels %s, %d bands, %d classes found -> wrote %s", len(found.images),
             found.label_template or "none", len(found.band_names), len(found.classes), path)  # fmt: skip
    for note in found.notes:
        log.warning("%s", note)
    train, val = check_loads(path)
    if found.label_template is None:
        log.warning("no labels found: geoseg train refuses a split without labels; set splits.train.labels "
                    "and splits.val.labels in %s (e.g. 'labels/{stem}.tif') first", path)  # fmt: skip
    log.info("checked: it loads (%d train and %d val scenes inspected); next: %s", train, val, hint)
    return path
