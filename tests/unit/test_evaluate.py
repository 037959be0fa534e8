"""``evaluate``: metrics of a class map against labels, on the prediction grid, checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.transform import from_origin

from conftest import write_tif
from geoseg.errors import GeosegError
from geoseg.inference.loaded import ClassInfo
from geoseg.inference.scoring import format_table, prediction_classes, score, write_metrics

CLASSES = ClassInfo.from_config([{"code": 10, "name": "water"}, {"code": 20, "name": "land"}])
GRID = from_origin(500_000, 5_000_000, 10, 10)


def test_a_prediction_equal_to_the_labels_scores_one(tmp_path):
    codes = np.random.default_rng(0).choice([10, 20], size=(30, 40)).astype(np.uint8)
    labels = write_tif(tmp_path / "lab.tif", codes, transform=GRID)
    pred = write_tif(tmp_path / "pred.tif", (codes // 10 - 1).astype(np.uint8), transform=GRID, nodata=255)
    result = score(str(pred), str(labels), CLASSES)
    assert result["miou"] == 1.0 and result["accuracy"] == 1.0 and result["mf1"] == 1.0
    assert result["pixels"] == 1200 and result["label_on_grid"]


def test_a_known_confusion_gives_the_hand_computed_metrics(tmp_path):
    # 10 scored pixels: water -> water 4, water -> land 2, land -> land 3, land -> water 1;
    # plus a label-nodata pixel (not scored) and a labelled pixel the prediction left as nodata.
    truth = np.array([[10, 10, 10, 10, 10, 10, 20, 20, 20, 20, 0, 20]], dtype=np.uint8)
    guess = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 255]], dtype=np.uint8)
    labels = write_tif(tmp_path / "lab.tif", truth, transform=GRID, nodata=0)
    pred = write_tif(tmp_path / "pred.tif", guess, transform=GRID, nodata=255)
    result = score(str(pred), str(labels), CLASSES)
    assert result["confusion"] == [[4, 2], [1, 3]]
    assert result["iou"]["water"] == pytest.approx(4 / 7)
    assert result["iou"]["land"] == pytest.approx(3 / 6)
    assert result["miou"] == pytest.approx((4 / 7 + 3 / 6) / 2)
    assert result["f1"]["water"] == pytest.approx(8 / 11)
    assert result["f1"]["land"] == pytest.approx(6 / 9)
    assert result["accuracy"] == pytest.approx(7 / 10)
    assert result["unpredicted_labelled_pixels"] == 1
    table = format_table(result)
    assert "water" in table and "0.571" in table and "0.700" in table
    write_metrics(str(tmp_path / "m.json"), result)
    assert json.loads((tmp_path / "m.json").read_text())["confusion"] == [[4, 2], [1, 3]]


def test_labels_on_a_coarser_grid_are_read_onto_the_prediction_grid(tmp_path):
    coarse = np.random.default_rng(1).choice([10, 20], size=(15, 20)).astype(np.uint8)
    labels = write_tif(tmp_path / "lab.tif", coarse, transform=from_origin(500_000, 5_000_000, 20, 20))
    fine = np.repeat(np.repeat(coarse // 10 - 1, 2, axis=0), 2, axis=1).astype(np.uint8)
    pred = write_tif(tmp_path / "pred.tif", fine, transform=GRID, nodata=255)
    result = score(str(pred), str(labels), CLASSES)
    assert not result["label_on_grid"]
    assert result["miou"] == 1.0 and result["pixels"] == 30 * 40


def test_a_raster_without_a_class_list_needs_classes(tmp_path):
    pred = write_tif(tmp_path / "pred.tif", np.zeros((4, 4), dtype=np.uint8), transform=GRID)
    with pytest.raises(GeosegError, match="no geoseg class list; pass classes="):
        prediction_classes(str(pred), None)
    assert prediction_classes(str(pred), [{"code": 3, "name": "x"}]).codes == [3]
