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
from geoseg.output_policy import check_existing, claim_output

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
    existing = "overwrite" if flag(cfg, "overwrite") else check_existing(cfg.get("existing", "error"))
    if not claim_output(path, "data_config", existing, option="", instead="pass name=OTHER for a new one"):
        return path
    labels = cfg.get("labels")
    if labels is not None and (not isinstance(labels, str) or not labels):
        raise GeosegError(f"init-data: labels={labels!r} must be a label path like 'labels/{{stem}}.tif'")
    found = draft(root, float(val_fraction), cfg.get("images"), labels)
    chip = cfg.get("chip_size")
    strip = 1.0 if found.by_folder else float(val_fraction)  # a folder split validates on whole scenes
    chip = chip_size_for(found.min_size, strip) if chip is None else chip
    if not is_whole(chip) or chip < 16:  # chip_size=0 is refused, not read as null
        raise GeosegError(f"init-data: chip_size={chip!r} must be a whole number of pixels (>= 16), or null")
    shown = os.path.relpath(conf) if not os.path.relpath(conf).startswith("..") else conf
    hint = f"geoseg stats --config-dir {shown} data={name} && geoseg train --config-dir {shown} data={name}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, render(found, val_fraction, chip, hint), "data config")
    templates = ", ".join(dict.fromkeys(s.labels or "none" for s in found.splits.values()))
    log.info("%d images, labels %s, %d bands, %d classes found -> wrote %s", len(found.images), templates,
             len(found.band_names), len(found.classes), path)  # fmt: skip
    for note in found.notes:
        log.warning("%s", note)
    train, val = check_loads(path)
    if found.unlabelled:
        log.warning("%s", no_labels_message(found.unlabelled, path, train, val))
    else:
        log.info("checked: it loads (%d train and %d val scenes inspected); next: %s", train, val, hint)
    return path


def no_labels_message(unlabelled: dict[str, str], path: str, train: int, val: int) -> str:
    """What init-data says when a split has no labels: the config cannot train; why, and what to pass."""
    which = " and ".join(unlabelled)
    why = "; ".join(dict.fromkeys(unlabelled.values()))
    return (
        f"init-data: no labels were found for the {which} images ({why}); {path} says labels: null there, "
        f"so it cannot train (its images load: {train} train and {val} val scenes). Run it again with "
        "existing=overwrite labels='TEMPLATE': the label path under the folder, with {stem}, {name} or "
        "{parent} of each image (e.g. labels='masks/{stem}_gt.tif')"
    )
