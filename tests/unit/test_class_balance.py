"""Class-balanced chips: a rare class is drawn more, to the class mix the sampler states (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_tif
from geoseg.data.build import load_scenes, random_sampler
from geoseg.data.data_options import check_data_config, class_map_from
from geoseg.errors import GeosegError


def _two_class_scene(root):
    """256 px, class 1 in five discs (about 2.4% of the pixels)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    write_tif(root / "images" / "a.tif", rng.integers(1, 999, (2, 256, 256), dtype=np.uint16), nodata=0)
    yy, xx = np.mgrid[0:256, 0:256]
    label = np.zeros((256, 256), np.uint8)
    for cy, cx in ((40, 50), (200, 30), (128, 128), (60, 210), (220, 220)):
        label[(yy - cy) ** 2 + (xx - cx) ** 2 < 9**2] = 1
    write_tif(root / "labels" / "a.tif", label[None], nodata=255)
    return label


def _cfg(root, tmp_path, **extra):
    cfg = {"root": str(root), "demo": None,
           "splits": {"train": {"images": "images/*.tif", "labels": "labels/{stem}.tif"}},
           "classes": [{"code": 0, "name": "bg"}, {"code": 1, "name": "rare"}], "ignore_index": 255,
           "chip_size": 32, "max_nodata_fraction": 0.5, "chips_per_epoch": 4000, "batch_size": 4,
           "num_workers": 0, "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    return {**cfg, **extra}


def _delivered(sampler, label):
    chips = sampler.epoch_chips()
    rare = sum(int(label[c.row : c.row + 32, c.col : c.col + 32].sum()) for c in chips)
    return rare / (len(chips) * 32 * 32)


def test_class_balanced_chips_raise_a_rare_class_to_the_stated_mix(tmp_path):
    label = _two_class_scene(tmp_path / "data")
    share = label.mean()
    found = {}
    for mode in ("area", "class_balanced"):
        cfg = _cfg(tmp_path / "data", tmp_path, sampling=mode, class_power=1.0)
        sampler = random_sampler(load_scenes(cfg, "train"), cfg, class_map_from(cfg), 0, 0, 1)
        found[mode] = (_delivered(sampler, label), sampler.class_mix[1])
    area, balanced = found["area"], found["class_balanced"]
    assert abs(area[0] - share) < 0.01 and abs(area[1] - share) < 0.01  # area: the scene's own share
    assert balanced[0] > 3 * area[0], found  # 2.4% -> 9.4%: a chip holding the class is drawn up to ~10x more
    assert abs(balanced[0] - balanced[1]) < 0.02  # the mix the sampler states (4000 chips drawn)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("sampling", "balanced", "data.sampling must be one of ['area', 'class_balanced'], got 'balanced'."),
    ("class_power", -1, "data.class_power must be a number in [0, 2] (1 = every class equal), got -1."),
])  # fmt: skip
def test_bad_sampling_options_are_one_line(tmp_path, key, value, message):
    with pytest.raises(GeosegError) as err:
        check_data_config(_cfg(tmp_path, tmp_path, **{key: value}))
    assert str(err.value) == message
