"""Every bad input is caught at start-up with a one-line message naming the file or option."""

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

from conftest import write_tif
from geoseg.data.data_options import check_data_config
from geoseg.data.scenes import inspect_scene
from geoseg.errors import GeosegError


def _check(match, *args, **kwargs):
    with pytest.raises(GeosegError, match=match) as info:
        inspect_scene(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_missing_file(tmp_path):
    _check(r"image file not found: '.*nope\.tif'", str(tmp_path / "nope.tif"), None)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a GeoTIFF")
    _check(r"cannot read image '.*bad\.tif' as a raster", str(bad), None)


def test_truncated_file(scene_pair, tmp_path):
    image, _, _, _ = scene_pair
    cut = tmp_path / "cut.tif"
    cut.write_bytes(image.read_bytes()[:200])
    _check(r"cannot read image '.*cut\.tif'", str(cut), None)


def test_no_crs(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", np.ones((1, 8, 8), np.uint8), crs=None)
    _check(r"image '.*nocrs\.tif' has no CRS", str(path), None)


def test_label_without_overlap_and_another_crs(scene_pair, tmp_path):
    image, _, _, _ = scene_pair
    far = write_tif(
        tmp_path / "far.tif", np.zeros((8, 8), np.uint8), crs=CRS.from_epsg(4326),
        transform=from_origin(100.0, -30.0, 0.001, 0.001),
    )  # fmt: skip
    msg = _check(r"label '.*far\.tif' \(EPSG:4326\) does not overlap image", str(image), str(far))
    assert "EPSG:32633" in msg


def test_band_index_out_of_range(scene_pair):
    image, _, _, _ = scene_pair
    _check(r"data.bands: band index 4 is out of range for '.*img\.tif', which has 3 bands", str(image), None,
           bands=[1, 4])  # fmt: skip
    _check(r"data.bands: band 'red' is not a band name", str(image), None, bands=["red"])


def test_label_values_outside_the_class_list(scene_pair):
    image, label, _, _ = scene_pair
    _check(r"label '.*lab\.tif' has values \[2\] that are not in data.classes", str(image), str(label),
           class_codes=[0, 1])  # fmt: skip
    scene = inspect_scene(str(image), str(label), class_codes=[0, 1], unknown_labels="ignore")
    assert scene.label_nodata == 255


def test_chip_larger_than_scene(scene_pair):
    image, _, _, _ = scene_pair
    _check(
        r"data.chip_size=64 is larger than image '.*img\.tif' \(48x40 px\)", str(image), None, chip_size=64
    )


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("chip_size", 0, "data.chip_size must be a positive"),
        ("max_nodata_fraction", 1.5, r"data.max_nodata_fraction must be in \[0, 1\]"),
        ("ignore_index", 1, "data.ignore_index=1 collides with a class index"),
        ("classes", [], "data.classes is empty"),
        ("batch_size", 0, "data.batch_size must be >= 1"),
        ("chip_size", "big", r"data.chip_size must be a whole number, got 'big'"),
        ("chip_size", 12.5, r"data.chip_size must be a whole number, got 12.5"),
        ("bands", 3, r"data.bands must be a list of 1-based indices or band names"),
        ("classes", [{"name": "water"}], r"data.classes: each entry needs an integer code"),
    ],
)
def test_bad_data_options(key, value, match):
    cfg = {"chip_size": 16, "max_nodata_fraction": 0.5, "batch_size": 2, "ignore_index": 255,
           "classes": [{"code": 0}, {"code": 1}]}  # fmt: skip
    cfg[key] = value
    with pytest.raises(GeosegError, match=match):
        check_data_config(cfg)


def test_an_unwritable_output_is_one_clear_error(tmp_path):
    from geoseg.io import atomic_write_text

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(
        GeosegError, match=r"cannot write '.*file\.txt/sub/stats\.json' .*choose a writable folder"
    ):
        atomic_write_text(blocker / "sub" / "stats.json", "{}")
