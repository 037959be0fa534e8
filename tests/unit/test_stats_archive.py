"""Statistics at archive scale: bounded-memory percentiles, parallel shards that merge exactly, and
statistics keyed by what they describe (issue 20)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import write_tif
from geoseg.data.band_sample import BandSample
from geoseg.data.build import train_stats
from geoseg.data.scenes import inspect_scene
from geoseg.data.stats import compute_stats, load_or_compute_stats
from geoseg.data.stats_accumulate import accumulate
from geoseg.errors import GeosegError


def _uniform_scenes(tmp_path, count=3, size=512):
    """Scenes of uniform integers 1..10000 (p2 = 200.98, p98 = 9800.02 for the whole population)."""
    rng = np.random.default_rng(0)
    paths, arrays = [], []
    for i in range(count):
        arr = rng.integers(1, 10_001, (2, size, size), dtype=np.uint16)
        arrays.append(arr)
        paths.append(write_tif(tmp_path / f"u{i}.tif", arr, nodata=0, tiled=True))
    return [inspect_scene(str(p), None) for p in paths], np.concatenate([a.reshape(2, -1) for a in arrays], 1)


def test_percentiles_from_the_bounded_sample_are_within_tolerance_of_exact_ones(tmp_path):
    """786,432 values per band, a sample of 262,144: the p2/p98 rank error is about 0.03% (one sigma);
    the tolerance, 0.2% of the range, is about 7 sigma. The old per-scene sample kept every pixel."""
    scenes, values = _uniform_scenes(tmp_path)
    stats = compute_stats(scenes, progress=False)
    exact = np.percentile(values.astype(np.float64), [2, 98], axis=1)
    np.testing.assert_allclose(stats.p2, exact[0], atol=20)
    np.testing.assert_allclose(stats.p98, exact[1], atol=20)
    np.testing.assert_allclose(stats.mean, values.mean(1), rtol=1e-12)  # moments stay exact


def test_the_sample_never_grows_past_its_size():
    sample = BandSample(1, k=1000)
    rng = np.random.default_rng(1)
    for block in range(50):
        values = rng.random(5000)
        sample.add(0, values, sample.block_keys(0, block, values.shape))
        assert sample.size(0) <= 2 * 1000
    assert sample.arrays(0)[0].size == 1000
    low, high = sample.percentiles((2.0, 98.0))[0]
    assert abs(low - 0.02) < 0.015 and abs(high - 0.98) < 0.015


def test_statistics_of_two_worker_processes_equal_one_process(tmp_path):
    scenes, _ = _uniform_scenes(tmp_path, count=4, size=256)
    one = accumulate(scenes, progress=False, workers=1)
    two = accumulate(scenes, progress=False, workers=2)
    np.testing.assert_allclose(two.mean, one.mean, rtol=1e-12)
    np.testing.assert_allclose(two.std(), one.std(), rtol=1e-12)
    assert two.count == one.count and (two.lo == one.lo).all() and (two.hi == one.hi).all()
    assert two.sample.percentiles((2.0, 98.0)) == one.sample.percentiles((2.0, 98.0))  # the same sample


def _cfg(root, cache, bands=None, region=None):
    train = {"images": "*.tif"}
    if region:
        train["region"] = region
    return {"root": str(root), "demo": None, "splits": {"train": train},
            "classes": [{"code": 0, "name": "a"}], "ignore_index": 255, "chip_size": 16,
            "max_nodata_fraction": 1.0, "batch_size": 2, "num_workers": 0, "bands": bands,
            "stats_path": None, "cache_dir": str(cache)}  # fmt: skip


def test_statistics_of_other_bands_or_regions_never_replace_each_other(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    pixels = np.random.default_rng(2).integers(1, 999, (3, 64, 64), dtype=np.uint16)
    write_tif(root / "a.tif", pixels, nodata=0)
    cache = tmp_path / "cache"
    full = train_stats(_cfg(root, cache), progress=False)
    one_band = train_stats(_cfg(root, cache, bands=[2]), progress=False)
    left = train_stats(_cfg(root, cache, region=[0, 0, 0.5, 1]), progress=False)
    assert len({full.key, one_band.key, left.key}) == 3 and len(list(cache.glob("stats-*.json"))) == 3
    assert train_stats(_cfg(root, cache), progress=False).mean == full.mean  # read back, not clobbered
    assert one_band.bands == [2] and left.count < full.count


def test_a_scene_rewritten_under_the_same_name_gets_new_statistics(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    image = write_tif(root / "a.tif", np.full((1, 32, 32), 100, np.uint16), nodata=0)
    cache = tmp_path / "cache"
    assert train_stats(_cfg(root, cache), progress=False).mean == [100.0]
    write_tif(image, np.full((1, 32, 32), 500, np.uint16), nodata=0)  # restacked: same name and size
    os.utime(image, ns=(1, 1))  # even with an old timestamp: the key holds the time, not "newer than"
    assert train_stats(_cfg(root, cache), progress=False).mean == [500.0]


def test_an_explicit_stats_file_of_a_rewritten_scene_is_refused(tmp_path):
    image = write_tif(tmp_path / "a.tif", np.full((1, 32, 32), 100, np.uint16), nodata=0)
    path = str(tmp_path / "stats.json")
    load_or_compute_stats([inspect_scene(str(image), None)], path, progress=False)
    write_tif(image, np.full((1, 32, 32), 500, np.uint16), nodata=0)
    os.utime(image, ns=(1, 1))
    with pytest.raises(GeosegError, match=r"stats.json' was computed from other data .*delete it or run"):
        load_or_compute_stats([inspect_scene(str(image), None)], path, progress=False)


def test_statistics_from_a_fraction_of_the_blocks_report_a_standard_error_that_covers_the_truth(tmp_path):
    """10 scenes x 16 tiles of 32 px, each tile with its own brightness: read a quarter of the tiles."""
    rng = np.random.default_rng(5)
    scenes = []
    for i in range(10):
        offsets = np.kron(rng.normal(1000, 200, (4, 4)), np.ones((32, 32)))
        arr = (offsets + rng.normal(0, 20, (128, 128)))[None].astype(np.uint16)
        path = write_tif(tmp_path / f"t{i}.tif", arr, nodata=0, tiled=True, block=32)
        scenes.append(inspect_scene(str(path), None))
    full = compute_stats(scenes, progress=False)
    part = compute_stats(scenes, progress=False, sample=0.25)
    assert full.mean_se == [] and part.sample == 0.25 and 0 < part.mean_se[0] < 40
    assert abs(part.mean[0] - full.mean[0]) < 4 * part.mean_se[0]
    assert part.count < full.count / 2
    with pytest.raises(GeosegError, match=r"sample=0 must be a fraction of the blocks in \(0, 1\]"):
        compute_stats(scenes, progress=False, sample=0)
