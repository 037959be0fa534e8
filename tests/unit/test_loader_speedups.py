"""Loader speed-ups keep their results: block-aligned chips, first-band validity, GDAL threads, workers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling

from conftest import write_tif
from geoseg.data.build import chip_alignment, random_sampler
from geoseg.data.data_options import check_data_config
from geoseg.data.dataset import ChipDataset
from geoseg.data.gdal_env import auto_workers, cpus_per_rank, gdal_defaults
from geoseg.data.labels import ClassMap
from geoseg.data.loader import num_workers, pin_memory
from geoseg.data.masks import coarse_image_valid
from geoseg.data.scenes import inspect_scene
from geoseg.data.windows import Chip, block_alignment, candidate_step
from geoseg.errors import GeosegError


@pytest.mark.parametrize(
    ("size", "block", "extent", "expected"),
    [
        (256, 256, 4096, 256),  # one chip per tile
        (64, 256, 4096, 64),  # four chips side by side inside a tile
        (256, 512, 4096, 256),  # a COG's 512-px tiles hold 2x2 chips
        (100, 256, 4096, 256),  # a chip that does not divide the tile starts on a tile edge
        (512, 256, 4096, 256),  # a chip larger than the tile: 2x2 tiles instead of 3x3
        (256, 1, 4096, 1),  # one-row strips: nothing to align
        (256, 4096, 4096, 1),  # a strip spans the whole row: every column offset reads the same
    ],
)
def test_block_alignment(size, block, extent, expected):
    assert block_alignment(size, block, extent) == expected


@pytest.mark.parametrize("size", [32, 64, 100, 256])
def test_candidate_step_divides_the_alignment(size):
    align = (block_alignment(size, 256, 4096), block_alignment(size, 256, 4096))
    step = candidate_step(size, align)
    assert all(a % step == 0 for a in align)
    assert candidate_step(size) == max(1, size // 8)  # unaligned spacing unchanged


@pytest.fixture
def tiled_scene(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(1, 1000, size=(3, 128, 160), dtype=np.uint16)
    img[:, :, :40] = 0  # a nodata strip on the left
    lab = rng.integers(0, 3, size=(128, 160), dtype=np.uint8)
    image = write_tif(tmp_path / "img.tif", img, nodata=0, tiled=True, block=32)
    label = write_tif(tmp_path / "lab.tif", lab, tiled=True, block=32)
    return inspect_scene(str(image), str(label), class_codes=[0, 1, 2], chip_size=32), img


def sampler_cfg(align: bool) -> dict:
    return {"chip_size": 32, "max_nodata_fraction": 0.25, "chips_per_epoch": 4000, "align_chips": align}


def test_aligned_chips_are_the_unaligned_candidates_on_the_block_grid(tiled_scene):
    scene, _ = tiled_scene
    assert scene.block == (32, 32) and chip_alignment(scene, 32) == (32, 32)
    cmap = ClassMap([0, 1, 2])
    free = random_sampler([scene], sampler_cfg(False), cmap, 0, 0, 1)
    aligned = random_sampler([scene], sampler_cfg(True), cmap, 0, 0, 1)
    on_grid = (free.origins % 32 == 0).all(axis=1)
    assert 0 < len(aligned.origins) < len(free.origins)
    assert (aligned.origins % 32 == 0).all()
    np.testing.assert_array_equal(aligned.origins, free.origins[on_grid])  # same filter, same order
    np.testing.assert_allclose(aligned.p, free.p[on_grid] / free.p[on_grid].sum())
    assert aligned.origins[:, 1].min() >= 32  # the nodata strip still filters chips out


def test_aligned_chips_read_the_same_pixels_as_rasterio(tiled_scene):
    scene, img = tiled_scene
    cmap = ClassMap([0, 1, 2])
    sampler = random_sampler([scene], sampler_cfg(True), cmap, 0, 0, 1)
    chips = list(sampler)[:20]
    batch = ChipDataset([scene], 32, cmap, fill=[0.0] * 3).__getitems__(chips)
    for k, chip in enumerate(chips):
        np.testing.assert_array_equal(
            batch["image"][k].numpy(), img[:, chip.row : chip.row + 32, chip.col : chip.col + 32]
        )


def full_coarse_valid(path, scene, shape) -> np.ndarray:
    """The plain way: every band read decimated, then the rule's nodata test (numpy only)."""
    with rasterio.open(path) as src:
        arr = src.read(indexes=list(scene.bands), out_shape=(len(scene.bands), *shape),
                       resampling=Resampling.nearest)  # fmt: skip
    valid = np.isfinite(arr).all(0)
    if scene.nodata is not None:
        at_nodata = arr == scene.nodata
        valid &= ~(at_nodata.any(0) if scene.invalid == "any" else at_nodata.all(0))
    return valid


@pytest.mark.parametrize("rule", ["any", "all"])
@pytest.mark.parametrize("layout", ["no_nodata", "first_band_only", "all_bands", "float_nan", "undeclared"])
def test_coarse_validity_matches_reading_every_band(tmp_path, layout, rule):
    rng = np.random.default_rng(2)
    dtype = np.float32 if layout == "float_nan" else np.uint16
    img = rng.integers(1, 1000, size=(3, 64, 64)).astype(dtype)
    if layout == "first_band_only":
        img[0, :16, :] = 0  # band 1 says nodata, the others hold data: valid only under rule all
    elif layout == "all_bands":
        img[:, :16, :] = 0
    elif layout == "float_nan":
        img[2, 40:, :] = np.nan  # only band 3: still invalid
    path = write_tif(tmp_path / "img.tif", img, nodata=None if layout in ("float_nan", "undeclared") else 0)
    scene = inspect_scene(str(path), None, invalid=rule)
    fast = coarse_image_valid(scene, (16, 16))
    expected = full_coarse_valid(path, scene, (16, 16))
    np.testing.assert_array_equal(fast, expected)
    all_valid = ("no_nodata", "undeclared") + (("first_band_only",) if rule == "all" else ())
    assert expected.all() == (layout in all_valid)


def test_nodata_in_a_later_band_only_is_not_estimated_but_masked_in_every_chip(tmp_path):
    """Rule any: the coarse estimate reads an integer file's first band only (start-up cost), so nodata
    in band 2 alone is not in it; the chip reader still masks those pixels exactly."""
    rng = np.random.default_rng(3)
    img = rng.integers(1, 1000, size=(3, 64, 64)).astype(np.uint16)
    img[1, 40:, :] = 0
    path = write_tif(tmp_path / "img.tif", img, nodata=0)
    scene = inspect_scene(str(path), None)
    assert coarse_image_valid(scene, (16, 16)).all()
    assert not full_coarse_valid(path, scene, (16, 16)).all()
    chip = ChipDataset([scene], 64, ClassMap([0]), fill=[7.0] * 3)[Chip(0, 0, 0)]["image"].numpy()
    np.testing.assert_array_equal(chip, np.where(img[1] == 0, np.uint16(7), img))


def test_gdal_threads_and_cache_are_split_across_readers(monkeypatch):
    assert gdal_defaults(workers=2, cpus=8)["GDAL_NUM_THREADS"] == "4"
    assert gdal_defaults(workers=0, cpus=8)["GDAL_NUM_THREADS"] == "8"  # reading in the main process
    assert gdal_defaults(workers=16, cpus=8)["GDAL_NUM_THREADS"] == "1"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    one = cpus_per_rank()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cpus_per_rank() == max(1, one // 4)


THREADED_READS = """
import hashlib, sys
import rasterio
from geoseg.data.build import random_sampler
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.scenes import inspect_scene

scene = inspect_scene(sys.argv[1], sys.argv[2], class_codes=[0, 1, 2], chip_size=32)
cmap = ClassMap([0, 1, 2])
cfg = {"chip_size": 32, "max_nodata_fraction": 0.25, "chips_per_epoch": 4000, "align_chips": False}
chips = list(random_sampler([scene], cfg, cmap, 0, 0, 1))[:30]
for threads in ("1", "4"):
    with rasterio.Env(GDAL_NUM_THREADS=threads):
        batch = ChipDataset([scene], 32, cmap, fill=[0.0] * 3).__getitems__(chips)
    digest = hashlib.sha256(batch["image"].numpy().tobytes() + batch["mask"].numpy().tobytes())
    print(threads, digest.hexdigest())
"""


def test_chips_do_not_depend_on_gdal_threads(tiled_scene):
    """In a child process: GDAL's decoding thread pool, once started here, would hang any later test
    that forks DataLoader workers (the pool does not survive fork)."""
    scene, _ = tiled_scene
    proc = subprocess.run([sys.executable, "-c", THREADED_READS, scene.image, scene.label],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (one, a), (four, b) = (line.split() for line in proc.stdout.splitlines())
    assert (one, four) == ("1", "4") and a == b


def test_auto_workers_keep_one_core_for_training():
    assert [auto_workers(c) for c in (1, 2, 4, 16, 64)] == [0, 1, 3, 8, 8]
    assert num_workers({"num_workers": "auto"}) == auto_workers()
    assert num_workers({"num_workers": 3}) == 3


@pytest.mark.parametrize("value", [-1, "four", 1.5, True])
def test_bad_num_workers_is_a_one_line_error(value):
    cfg = {"chip_size": 32, "max_nodata_fraction": 0.5, "batch_size": 2, "ignore_index": 255,
           "classes": [{"code": 0}], "num_workers": value}  # fmt: skip
    with pytest.raises(GeosegError, match=r"data.num_workers must be a whole number >= 0 or 'auto'"):
        check_data_config(cfg)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("prefetch_factor", 0, r"^data\.prefetch_factor must be a whole number >= 1 \(default 2\), got 0\.$"),
     ("prefetch_factor", 1.5, r"^data\.prefetch_factor must be a whole number >= 1"),
     ("max_open_files", -4, r"^data\.max_open_files must be a whole number >= 1 \(default 64\), got -4\.$"),
     ("persistent_workers", "yes", r"^data\.persistent_workers='yes' must be true or false$")],
)  # fmt: skip
def test_bad_loader_options_are_one_line_errors_before_any_file_is_opened(option, value, message):
    """torch would assert inside the first epoch's iterator (prefetch_factor=0), and LRU size or a
    truthy string would pass unnoticed."""
    cfg = {"chip_size": 32, "max_nodata_fraction": 0.5, "batch_size": 2, "ignore_index": 255,
           "classes": [{"code": 0}], option: value}  # fmt: skip
    with pytest.raises(GeosegError, match=message):
        check_data_config(cfg)


def test_bad_align_chips_is_a_one_line_error():
    cfg = {"chip_size": 32, "max_nodata_fraction": 0.5, "batch_size": 2, "ignore_index": 255,
           "classes": [{"code": 0}], "align_chips": "yes"}  # fmt: skip
    with pytest.raises(GeosegError, match=r"data\.align_chips must be true or false"):
        check_data_config(cfg)


FORK_AFTER_READ = """
import sys
from geoseg.data.build import random_sampler
from geoseg.data.loader import make_loader
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.scenes import inspect_scene

scene = inspect_scene(sys.argv[1], sys.argv[2], class_codes=[0, 1, 2], chip_size=32)
cmap = ClassMap([0, 1, 2])
for workers in (0, 2):  # reads in this process first, then forks workers (as a sweep's jobs do)
    cfg = {"chip_size": 32, "max_nodata_fraction": 0.25, "chips_per_epoch": 64, "align_chips": False,
           "batch_size": 8, "num_workers": workers, "persistent_workers": False}
    loader = make_loader(ChipDataset([scene], 32, cmap, fill=[0.0] * 3),
                         random_sampler([scene], cfg, cmap, 0, 0, 1), cfg)
    batches = list(loader)
    print(workers, sum(len(b["image"]) for b in batches), sum(int(b["image"].sum()) for b in batches))
"""


def test_workers_forked_after_reads_in_the_main_process_do_not_hang(tiled_scene, tmp_path):
    """GDAL's decoding thread pool does not survive fork: the main process must never start it."""
    scene, _ = tiled_scene
    env = {k: v for k, v in os.environ.items() if k != "GDAL_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", FORK_AFTER_READ, scene.image, scene.label],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    zero, two = proc.stdout.splitlines()
    assert zero.split()[:2] == ["0", "64"] and two.split()[:2] == ["2", "64"]
    assert zero.split()[2] == two.split()[2]  # the same chips, GDAL threads in the workers or not


def test_pin_memory_auto_follows_cuda():
    import torch

    assert pin_memory({"pin_memory": "auto"}) is torch.cuda.is_available()
    assert pin_memory({"pin_memory": False}) is False
    with pytest.raises(GeosegError, match=r"^data\.pin_memory must be true, false or auto, got 'on'\.$"):
        pin_memory({"pin_memory": "on"})


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_label_lookup_through_an_unsigned_view_matches_the_code_search(dtype):
    """The lookup table reads signed labels through an unsigned view: same indices as a plain search."""
    info = np.iinfo(dtype)
    codes = [c for c in (-1, 0, 1, 8, 200, -300, 1000) if info.min <= c <= info.max]
    cmap = ClassMap(codes, ignore_index=255)
    rng = np.random.default_rng(3)
    label = rng.integers(info.min, int(info.max) + 1, size=(64, 64)).astype(dtype)
    label[::3, ::3] = rng.choice(codes, size=label[::3, ::3].shape)  # plenty of real codes
    label[0, :2] = [info.min, info.max]
    expected = cmap._search(label)
    out = np.empty(label.shape, dtype=cmap.dtype)
    np.testing.assert_array_equal(cmap(label, out=out), expected)
    assert (expected != 255).sum() >= 400 and set(np.unique(expected)) <= set(range(len(codes))) | {255}
