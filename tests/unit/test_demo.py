"""The demo scenes meet the contract the README promises."""

import csv

import numpy as np
import pytest
import rasterio

from geoseg.data.demo import make_demo_data


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("d") / "demo")


def test_demo_scenes_contract(demo):
    with open(demo / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 4 and {r["split"] for r in rows} == {"train", "val"}
    off_grid = 0
    for row in rows:
        with rasterio.open(demo / row["image"]) as img, rasterio.open(demo / row["label"]) as lab:
            assert img.count >= 6 and img.dtypes[0] == "uint16"
            assert img.width >= 512 and img.height >= 512
            assert img.crs.is_projected and img.nodata == 0
            assert img.descriptions[0] == "B02_blue"
            data = img.read()
            hole = (data == 0).all(0)
            labels = lab.read(1)
            assert lab.crs == img.crs
            if lab.transform != img.transform or lab.shape != img.shape:
                off_grid += 1
            classes = set(np.unique(labels).tolist()) - {255}
            assert classes == {0, 1, 2, 3}
            if row["image"].endswith("scene_05.tif"):
                assert not hole.any()
            else:
                assert 0.02 < hole.mean() < 0.5  # a nodata edge as real tiles have
            if lab.shape == img.shape and lab.transform == img.transform:
                assert (labels[hole] == 255).all()
    assert off_grid >= 1


def test_demo_spectra_differ_by_class(demo):
    with (
        rasterio.open(demo / "train/images/scene_00.tif") as img,
        rasterio.open(demo / "train/labels/scene_00.tif") as lab,
    ):
        data, labels = img.read().astype(float), lab.read(1)
    ndvi = (data[3] - data[2]) / (data[3] + data[2] + 1)
    means = {c: ndvi[labels == c].mean() for c in range(4)}
    assert means[1] > 0.5 > means[2] and means[0] < 0  # vegetation > bare soil > water


def test_demo_is_deterministic(demo, tmp_path):
    again = make_demo_data(tmp_path / "again")
    for name in ("train/images/scene_01.tif", "train/labels/scene_02.tif", "val/images/scene_04.tif"):
        with rasterio.open(demo / name) as a, rasterio.open(again / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
    assert not list(tmp_path.glob(".again.*"))  # no temporary folder left behind
