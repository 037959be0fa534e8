"""From config to loader: manifest and glob scenes, the nodata filter, aug configs, band checks."""

import numpy as np
import pytest
import rasterio
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from geoseg.config import as_dict
from geoseg.data.build import build_augment, build_split, load_scenes, train_stats
from geoseg.data.demo import make_demo_data
from geoseg.errors import GeosegError


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("b") / "demo", size=256)


def data_cfg(root, tmp_path, *overrides):
    return as_dict(
        compose_config("stats", f"data.root={root}", f"data.stats_path={tmp_path}/s.json", *overrides).data
    )


def test_manifest_and_glob_find_the_same_scenes(demo_root, tmp_path):
    by_glob = load_scenes(data_cfg(demo_root, tmp_path), "val")
    by_manifest = load_scenes(data_cfg(demo_root, tmp_path, "data.manifest=manifest.csv"), "val")
    assert [s.image for s in by_glob] == [s.image for s in by_manifest]
    assert [s.label for s in by_glob] == [s.label for s in by_manifest]
    assert len(by_glob) == 2 and all(s.label is not None for s in by_glob)


def test_random_chips_respect_max_nodata_fraction(demo_root, tmp_path):
    cfg = data_cfg(demo_root, tmp_path, "data.max_nodata_fraction=0.1", "data.num_workers=0",
                   "data.chips_per_epoch=64", "data.chip_size=32")  # fmt: skip
    scenes = load_scenes(cfg, "train")
    stats = train_stats(cfg, progress=False, scenes=scenes)
    train = build_split(cfg, "train", stats, augment=None, seed=0, scenes=scenes)
    assert train.scenes == scenes
    fractions = []
    for batch in train.loader:
        assert batch["image"].shape[1:] == (6, 32, 32) and batch["image"].dtype == torch.uint16
        assert batch["mask"].dtype == torch.uint8
        fractions += batch["mask"].eq(255).float().mean((1, 2)).tolist()
    assert len(fractions) == 64
    # estimated on a grid of chip/8 px cells, so a chip can exceed the bound by a few edge cells
    assert max(fractions) <= 0.1 + 0.25 and np.mean(fractions) < 0.1


def test_validation_grid_covers_each_val_scene(demo_root, tmp_path):
    cfg = data_cfg(demo_root, tmp_path, "data.num_workers=0", "data.chip_size=64")
    val = build_split(cfg, "val", train_stats(cfg, progress=False), augment=None, seed=0)
    chips = torch.cat([b["chip"] for b in val.loader])
    assert len(chips) == 2 * 16 and len({tuple(c) for c in chips.tolist()}) == 32


def test_band_count_must_match_the_stats(demo_root, tmp_path):
    cfg = data_cfg(demo_root, tmp_path, "data.num_workers=0")
    stats = train_stats(cfg, progress=False)
    cfg["bands"] = [1, 2, 3]
    with pytest.raises(
        GeosegError, match=r"computed for bands \[1, 2, 3, 4, 5, 6\] but the data selects \[1, 2, 3\]"
    ):
        build_split(cfg, "val", stats, augment=None, seed=0)


@pytest.mark.parametrize("name", ["none", "flips", "geometric"])
def test_every_aug_config_builds_an_n_band_safe_pipeline(name, compose_config):
    cfg = compose_config("stats", f"+aug={name}")
    aug = build_augment(OmegaConf.to_container(cfg.aug, resolve=True) if cfg.aug else None)
    if name == "none":
        assert aug is None
        return
    image = np.random.default_rng(0).integers(1, 4000, size=(32, 32, 13)).astype(np.uint16)
    mask = (image[..., 0] > 2000).astype(np.uint8)
    out_image, out_mask, out_valid = aug(image, mask, np.ones((32, 32), bool), seed=3)
    assert out_image.shape == (32, 32, 13) and out_image.dtype == np.uint16 and out_mask.shape == (32, 32)
    assert set(np.unique(out_mask)) <= {0, 1, 255} and out_valid.dtype == bool


def test_a_spatial_split_keeps_train_and_val_apart(demo_root, tmp_path):
    """One scene split by region: left 3/4 for training, right 1/4 for validation."""
    overrides = [
        "data.num_workers=0",
        "data.chip_size=32",
        "data.chips_per_epoch=200",
        "data.splits.train.images=val/images/scene_05.tif",
        "data.splits.train.labels='val/labels/{stem}.tif'",
        "data.splits.train.region=[0,0,0.75,1]",
        "data.splits.val.images=val/images/scene_05.tif",
        "data.splits.val.region=[0.75,0,1,1]",
    ]
    cfg = data_cfg(demo_root, tmp_path, *overrides)
    stats = train_stats(cfg, progress=False)
    with rasterio.open(demo_root / "val/images/scene_05.tif") as src:
        left = src.read()[:, :, :192].reshape(6, -1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, left.mean(1), rtol=1e-12)  # stats from the train region only
    train = build_split(cfg, "train", stats, augment=None, seed=0)
    val = build_split(cfg, "val", stats, augment=None, seed=0)
    train_cols = [c.col for c in train.sampler]
    val_cols = [c.col for c in val.sampler]
    assert max(train_cols) + 32 <= 192 and min(val_cols) >= 192 and len(val_cols) == 2 * 8
    with pytest.raises(GeosegError, match=r"needs left < right"):
        load_scenes({**cfg, "splits": {"val": {**cfg["splits"]["val"], "region": [0.9, 0, 0.1, 1]}}}, "val")
    with pytest.raises(GeosegError, match=r"larger than the region \[0.9, 0, 1, 1\]"):
        load_scenes({**cfg, "splits": {"val": {**cfg["splits"]["val"], "region": [0.9, 0, 1, 1]}}}, "val")


def test_demo_scenes_are_generated_only_at_the_demo_folder(tmp_path):
    from geoseg.data.data_options import data_root

    demo = tmp_path / "data" / "demo"
    assert data_root({"root": str(demo), "demo": str(demo)}) == str(demo)
    assert (demo / "manifest.csv").exists()  # generated because it was missing
    with pytest.raises(GeosegError, match="is not a folder"):
        data_root({"root": str(tmp_path / "mine"), "demo": str(demo)})
    assert not (tmp_path / "mine").exists()
