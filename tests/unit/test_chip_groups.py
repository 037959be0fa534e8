"""Random chips drawn per file block (data.chips_per_block): same probabilities and positions, same pixels."""

from __future__ import annotations

import collections
import functools

import albumentations as A
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from conftest import write_tif
from geoseg.data.build import random_sampler
from geoseg.data.chip_groups import check_group_cache, chips_per_block, group_bytes, origin_cells
from geoseg.data.data_options import check_data_config
from geoseg.data.dataset import ChipDataset
from geoseg.data.gdal_env import configure_gdal, gdal_defaults
from geoseg.data.labels import ClassMap
from geoseg.data.loader import configure_gdal_worker, make_loader, read_threads
from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scenes import inspect_scene
from geoseg.data.transforms import Augment, apply_symmetry
from geoseg.errors import GeosegError

ORIGIN = from_origin(500_000, 5_000_000, 10, 10)


@pytest.mark.parametrize(("batch", "expected"), [(1, 1), (8, 1), (15, 1), (16, 2), (24, 3), (32, 4), (64, 4),
                                                 (36, 4), (40, 4), (18, 2), (17, 1)])  # fmt: skip
def test_auto_keeps_eight_groups_a_batch_and_divides_it(batch, expected):
    assert chips_per_block({"batch_size": batch, "chips_per_block": "auto"}) == expected
    assert chips_per_block({"batch_size": batch}) == 1  # a config without the key: independent chips


@pytest.mark.parametrize("value", [3, 0, -2, 2.0, True, "four"])
def test_a_count_that_does_not_divide_the_batch_is_a_one_line_error(value):
    cfg = {"chip_size": 32, "max_nodata_fraction": 0.5, "batch_size": 8, "ignore_index": 255,
           "classes": [{"code": 0}], "chips_per_block": value}  # fmt: skip
    message = (r"^data\.chips_per_block must be 'auto' or a whole number that divides data\.batch_size=8 "
               r".* use one of \[1, 2, 4, 8\]\.$")  # fmt: skip
    with pytest.raises(GeosegError, match=message):
        check_data_config(cfg)


def _lattice_sampler(num_samples: int, group: int, rank: int = 0, world: int = 1, seed: int = 0):
    """Candidates every 4 px on a 96x128 scene with 32-px blocks (12 cells), uneven weights."""
    origins = np.stack(np.meshgrid(np.arange(0, 96, 4), np.arange(0, 128, 4), indexing="ij"), -1).reshape(
        -1, 2
    )
    weights = np.random.default_rng(7).uniform(0.1, 1.0, len(origins))
    weights[:40] = 0  # some candidates are never drawn
    cells = origins[:, 0] // 32 * 10 + origins[:, 1] // 32
    return (
        RandomChipSampler([origins], [weights], num_samples, seed, rank, world, group, [cells]),
        origins,
        weights,
    )


def test_a_group_shares_one_block_and_every_chip_keeps_its_candidates_probability():
    sampler, origins, weights = _lattice_sampler(24_000, group=4)
    chips = sampler.epoch_chips()
    assert len(chips) == 24_000
    for g in range(0, len(chips), 4):
        assert len({(c.row // 32, c.col // 32) for c in chips[g : g + 4]}) == 1
    counts = collections.Counter((c.row, c.col) for c in chips)
    expected = weights / weights.sum() * len(chips)
    drawn = np.array([counts[(int(r), int(c))] for r, c in origins])
    assert (drawn[weights == 0] == 0).all()
    assert (drawn[weights > 0] > 0).all()  # any candidate offset is reachable
    big = expected > 40  # a per-candidate frequency test (Poisson: 5 sigma)
    assert (np.abs(drawn[big] - expected[big]) < 5 * np.sqrt(expected[big]) + 1).all()
    free = collections.Counter((c.row, c.col) for c in _lattice_sampler(24_000, group=1)[0].epoch_chips())
    assert len(counts) == len(free)  # the same positions as independent chips


def test_groups_split_disjointly_across_ranks_and_resume_mid_epoch():
    full = _lattice_sampler(400, group=4)[0]
    shards = [_lattice_sampler(400, group=4, rank=r, world=2)[0] for r in range(2)]
    assert [len(s) for s in shards] == [200, 200]
    lists = [list(s) for s in shards]
    groups = [[tuple(x[g : g + 4]) for g in range(0, 200, 4)] for x in lists]
    assert not set(groups[0]) & set(groups[1])
    assert sorted(lists[0] + lists[1]) == sorted(full.epoch_chips())
    shards[1].set_epoch(3, start=12)
    resumed = list(shards[1])
    shards[1].set_epoch(3)
    assert resumed == list(shards[1])[12:] and len(shards[1]) == 200
    assert _lattice_sampler(401, group=4, world=2)[0].num_samples == 400  # a multiple of ranks x group


def _stack_scene(tmp_path, dtype="uint16", label_scale=1):
    """A tiled 3-band scene with nodata, and a label (codes with gaps, -1 nodata) on its grid or coarser."""
    rng = np.random.default_rng(3)
    if dtype == "float32":
        img = rng.normal(0.3, 0.1, (3, 96, 128)).astype(np.float32)
        img[1, 40:50, 60:70] = np.nan
        nodata = None
    else:
        img = rng.integers(1, 3000, (3, 96, 128)).astype(dtype)
        img[:, :20, :30] = 0
        nodata = 0
    lab = rng.choice(np.array([0, 3, 7, -1], dtype=np.int16), size=(96 // label_scale, 128 // label_scale))
    image = write_tif(tmp_path / "img.tif", img, ORIGIN, nodata=nodata, tiled=True, block=32)
    transform = from_origin(500_000, 5_000_000, 10 * label_scale, 10 * label_scale)
    label = write_tif(tmp_path / "lab.tif", lab, transform, tiled=True, block=16)
    scene = inspect_scene(str(image), str(label), class_codes=[0, 3, 7], chip_size=24, label_nodata=-1)
    return scene, ClassMap([0, 3, 7])


def test_grouped_batches_equal_plain_rasterio_reads(tmp_path):
    scene, cmap = _stack_scene(tmp_path)
    cfg = {"chip_size": 24, "max_nodata_fraction": 0.5, "chips_per_epoch": 64, "align_chips": False,
           "batch_size": 8, "chips_per_block": 4, "num_workers": 0}  # fmt: skip
    fill = [5.0, 6.0, 7.0]
    loader = make_loader(
        ChipDataset([scene], 24, cmap, fill=fill), random_sampler([scene], cfg, cmap, 0, 0, 1), cfg
    )
    batches = 0
    with rasterio.open(scene.image) as img, rasterio.open(scene.label) as lab:
        for batch in loader:
            batches += 1
            cells = {(r // 32, c // 32) for _, r, c in batch["chip"].tolist()}
            assert len(cells) <= 2  # 8 chips: two groups of 4, each inside one 32-px block
            for i, (_, row, col) in enumerate(batch["chip"].tolist()):
                window = Window(col, row, 24, 24)
                raw, codes = img.read(window=window), lab.read(1, window=window)
                invalid = (raw == 0).any(0)
                expected = np.where(invalid, np.array(fill, dtype=raw.dtype)[:, None, None], raw)
                np.testing.assert_array_equal(batch["image"][i].numpy(), expected)
                target = np.select([codes == 0, codes == 3, codes == 7], [0, 1, 2], 255)
                np.testing.assert_array_equal(batch["mask"][i].numpy(), np.where(invalid, 255, target))
    assert batches == 8


def test_grouped_chips_are_identical_for_zero_and_two_workers_and_after_a_mid_epoch_resume(tmp_path):
    scene, cmap = _stack_scene(tmp_path)
    aug = Augment(A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]))
    runs = []
    for workers, start in ((0, 0), (2, 0), (2, 16)):  # the last resumes epoch 1 after its 2nd batch
        cfg = {"chip_size": 24, "max_nodata_fraction": 0.5, "chips_per_epoch": 48, "align_chips": False,
               "batch_size": 8, "chips_per_block": 2, "num_workers": workers,
               "persistent_workers": False}  # fmt: skip
        ds = ChipDataset([scene], 24, cmap, fill=[1.0, 2.0, 3.0], augment=aug)
        sampler = random_sampler([scene], cfg, cmap, 0, 0, 1)
        sampler.set_epoch(1, start=start)
        runs.append([(b["image"], b["mask"], b["chip"]) for b in make_loader(ds, sampler, cfg)])
    assert [len(r) for r in runs] == [6, 6, 4]
    for a, b in zip(runs[0], runs[1], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    for a, b in zip(runs[0][2:], runs[2], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_origin_cells_follow_the_file_blocks_and_strips(tmp_path):
    scene, _ = _stack_scene(tmp_path)
    origins = np.array([[0, 0], [31, 31], [32, 0], [0, 32], [64, 100]])
    cells = origin_cells(scene, 24, origins)
    assert cells[0] == cells[1] and len(set(cells.tolist())) == 4
    striped = write_tif(tmp_path / "striped.tif", np.ones((1, 96, 128), np.uint8))
    strip_scene = inspect_scene(str(striped), None, chip_size=24)
    rows, cols = strip_scene.block
    assert cols == 128  # a strip spans the row: columns are grouped by chip-sized cells instead
    cells = origin_cells(strip_scene, 24, np.array([[0, 0], [0, 23], [0, 24], [rows, 0]]))
    assert cells[0] == cells[1] and len(set(cells.tolist())) == 3


@pytest.mark.parametrize(
    "transforms",
    [
        [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)],  # aug=flips
        [A.D4(p=1.0)],
        [A.OneOf([A.Transpose(p=1.0), A.HorizontalFlip(p=1.0)], p=0.7), A.RandomRotate90(p=1.0)],
    ],
)
def test_flips_on_channels_first_chips_equal_albumentations(transforms):
    aug = Augment(A.Compose(transforms))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 900, (13, 20, 20)).astype(np.int16)
    mask = rng.integers(0, 4, (20, 20)).astype(np.uint8)
    valid = np.ones((20, 20), dtype=bool)
    seen = set()
    for seed in range(64):
        symmetry = aug.symmetry(seed)
        seen.add(symmetry)
        hwc, out_mask, _ = aug(np.moveaxis(image, 0, -1), mask, valid, seed)
        np.testing.assert_array_equal(apply_symmetry(image, symmetry), np.moveaxis(hwc, -1, 0))
        np.testing.assert_array_equal(apply_symmetry(mask, symmetry), out_mask)
    assert len(seen) >= 4


def test_other_pipelines_take_the_general_path():
    assert Augment(A.Compose([A.HorizontalFlip(), A.Rotate(limit=10)])).symmetry(0) is None


def test_read_threads_is_checked_and_applied_in_each_worker(monkeypatch, restore_gdal_config):
    assert read_threads({}) is None and read_threads({"read_threads": "auto"}) is None
    assert read_threads({"read_threads": 3}) == 3
    with pytest.raises(
        GeosegError, match=r"^data\.read_threads must be a whole number >= 1 or 'auto', got 0\.$"
    ):
        read_threads({"read_threads": 0})
    assert gdal_defaults(workers=2, cpus=8, threads=3)["GDAL_NUM_THREADS"] == "3"
    monkeypatch.setenv("GDAL_NUM_THREADS", "1")
    assert configure_gdal(workers=2, threads=3)["GDAL_NUM_THREADS"] == "3"  # the config's explicit value wins
    assert "GDAL_NUM_THREADS" not in configure_gdal(workers=2)
    cfg = {"batch_size": 2, "num_workers": 1, "read_threads": 3}
    loader = make_loader([], None, cfg)
    assert isinstance(loader.worker_init_fn, functools.partial)
    init = loader.worker_init_fn
    assert init.func is configure_gdal_worker and init.keywords == {"threads": 3}


def test_a_warning_when_a_groups_blocks_outgrow_the_gdal_cache(tmp_path, monkeypatch, caplog):
    scene, _ = _stack_scene(tmp_path)  # 32-px tiles, 3 uint16 bands: 24-px chips from a 32-px cell span
    assert group_bytes(scene, 24) == 64 * 64 * 3 * 2  # 2 x 2 blocks
    monkeypatch.setenv("GDAL_CACHEMAX", "0")
    with caplog.at_level("WARNING"):
        check_group_cache([scene], 24, 4, workers=2)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "data.chips_per_block=4: a group of 24-px chips of" in line and "set GDAL_CACHEMAX=1 (MB)" in line
    caplog.clear()
    monkeypatch.delenv("GDAL_CACHEMAX")
    check_group_cache([scene], 24, 4, workers=2)  # 512 MB per worker: plenty
    check_group_cache([scene], 24, 4, workers=0)  # the main process: GDAL's own default, not checked
    assert not caplog.records
