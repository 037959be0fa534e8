"""Statistics equal numpy's over valid pixels, are tied to the band list, and are cached."""

import json

import numpy as np
import pytest

from conftest import write_tif
from geoseg.data.scenes import inspect_scene
from geoseg.data.stats import compute_stats, load_or_compute_stats
from geoseg.errors import GeosegError


def test_stats_equal_numpy_over_valid_pixels(scene_pair, tmp_path):
    image, _, img, _ = scene_pair
    rng = np.random.default_rng(4)
    img2 = rng.integers(1, 5000, size=(3, 24, 40), dtype=np.uint16)
    img2[1, 5:9, :] = 0  # nodata in one band only: invalid under data.invalid=any (the default)
    img2[:, 12:14, 3:30] = 0  # nodata in every band: invalid
    second = write_tif(tmp_path / "b.tif", img2, nodata=0, tiled=True)
    scenes = [inspect_scene(str(image), None), inspect_scene(str(second), None)]
    stats = compute_stats(scenes, progress=False)
    values = np.concatenate(
        [a.reshape(3, -1)[:, (a != 0).all(0).ravel()].astype(np.float64) for a in (img, img2)], axis=1
    )
    np.testing.assert_allclose(stats.mean, values.mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, values.std(1), rtol=1e-10)
    np.testing.assert_array_equal(stats.min, values.min(1))
    np.testing.assert_array_equal(stats.max, values.max(1))
    assert stats.count == values.shape[1]
    assert stats.bands == [1, 2, 3]


def test_stats_under_rule_all_exclude_each_bands_own_nodata(scene_pair, tmp_path):
    """data.invalid=all keeps a pixel where one band is nodata, but that band's statistics skip it."""
    rng = np.random.default_rng(5)
    img = rng.integers(1, 5000, size=(3, 24, 40), dtype=np.uint16)
    img[1, 5:9, :] = 0
    img[:, 12:14, 3:30] = 0
    path = write_tif(tmp_path / "c.tif", img, nodata=0, tiled=True)
    stats = compute_stats([inspect_scene(str(path), None, invalid="all")], progress=False)
    pixel_valid = (img != 0).any(0)
    assert stats.count == pixel_valid.sum()
    for b in range(3):
        band = img[b][pixel_valid & (img[b] != 0)].astype(np.float64)
        assert stats.min[b] > 0
        np.testing.assert_allclose(stats.mean[b], band.mean(), rtol=1e-12)
        np.testing.assert_allclose(stats.std[b], band.std(), rtol=1e-10)


def test_band_selection_by_index_and_name(scene_pair):
    image, _, img, _ = scene_pair
    by_name = compute_stats([inspect_scene(str(image), None, bands=["nir", "blue"])], progress=False)
    by_index = compute_stats([inspect_scene(str(image), None, bands=[3, 1])], progress=False)
    assert by_name.bands == by_index.bands == [3, 1]
    valid = (img != 0).all(0)
    np.testing.assert_allclose(by_name.mean, [img[2][valid].mean(), img[0][valid].mean()], rtol=1e-12)


def test_stats_are_cached_and_checked_against_the_bands(scene_pair, tmp_path):
    image, _, _, _ = scene_pair
    path = tmp_path / "stats.json"
    scenes = [inspect_scene(str(image), None)]
    first = load_or_compute_stats(scenes, str(path), progress=False)
    assert json.loads(path.read_text())["mean"] == first.mean
    path.write_text(path.read_text().replace(str(first.mean[0]), "123.0"))
    assert load_or_compute_stats(scenes, str(path), progress=False).mean[0] == 123.0  # read, not recomputed
    with pytest.raises(GeosegError, match=r"computed for bands \[1, 2, 3\] but the data selects \[1\]"):
        load_or_compute_stats([inspect_scene(str(image), None, bands=[1])], str(path), progress=False)


def test_stats_computed_with_another_nodata_are_refused(scene_pair, tmp_path):
    image, _, _, _ = scene_pair
    path = tmp_path / "stats.json"
    load_or_compute_stats([inspect_scene(str(image), None)], str(path), progress=False)
    with pytest.raises(
        GeosegError, match=r"computed with image nodata \[0\.0\] but the data now uses \[7\.0\]"
    ):
        load_or_compute_stats([inspect_scene(str(image), None, nodata=7.0)], str(path), progress=False)
