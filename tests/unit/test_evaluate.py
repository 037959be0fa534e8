"""``evaluate``: metrics of a class map against labels, on the prediction grid, checked by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import write_tif
from geoseg.classes import ClassInfo
from geoseg.errors import GeosegError
from geoseg.inference.score_set import label_for, prediction_files, score_set, set_classes
from geoseg.inference.scoring import format_table, prediction_classes, score, write_metrics
from geoseg.inference.writer import CLASSES_TAG

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


def random_pair(tmp_path, name: str, width: int, seed: int, transform=GRID) -> tuple[str, str]:
    """A label raster and a prediction that agrees with it on about two thirds of the pixels."""
    rng = np.random.default_rng(seed)
    codes = rng.choice([10, 20], size=(30, width)).astype(np.uint8)
    guess = np.where(rng.random(codes.shape) < 0.66, codes // 10 - 1, rng.integers(0, 2, codes.shape))
    (tmp_path / "labels").mkdir(exist_ok=True)
    (tmp_path / "preds").mkdir(exist_ok=True)
    lab = write_tif(tmp_path / "labels" / name, codes, transform=transform)
    pred = write_tif(tmp_path / "preds" / name, guess.astype(np.uint8), transform=transform, nodata=255)
    return str(pred), str(lab)


def test_pooled_metrics_of_a_set_equal_the_metrics_of_one_mosaic(tmp_path):
    a_pred, a_lab = random_pair(tmp_path, "a.tif", 40, seed=2)
    b_pred, b_lab = random_pair(
        tmp_path, "b.tif", 24, seed=3, transform=from_origin(500_400, 5_000_000, 10, 10)
    )
    with rasterio.open(a_pred) as ap, rasterio.open(b_pred) as bp, rasterio.open(a_lab) as al, \
            rasterio.open(b_lab) as bl:  # fmt: skip
        mosaic_pred = write_tif(
            tmp_path / "mp.tif", np.concatenate([ap.read(1), bp.read(1)], 1), GRID, nodata=255
        )
        mosaic_lab = write_tif(tmp_path / "ml.tif", np.concatenate([al.read(1), bl.read(1)], 1), GRID)
    mosaic = score(str(mosaic_pred), str(mosaic_lab), CLASSES)
    pooled = score_set(prediction_files(str(tmp_path / "preds")), str(tmp_path / "labels"), CLASSES)
    for key in ("confusion", "iou", "f1", "miou", "mf1", "accuracy", "pixels"):
        assert pooled[key] == mosaic[key], key  # the same matrix, so the same floats
    assert [s["prediction"] for s in pooled["scenes"]] == [a_pred, b_pred]
    assert pooled["scenes"][0]["confusion"] == score(a_pred, a_lab, CLASSES)["confusion"]
    assert pooled["scenes"][0]["miou"] != pooled["miou"]  # the pooled numbers are not one scene's


def test_region_scores_the_same_pixels_as_a_cropped_scene(tmp_path):
    pred, lab = random_pair(tmp_path, "a.tif", 40, seed=4)
    with rasterio.open(pred) as p, rasterio.open(lab) as lb:
        crop_pred = write_tif(tmp_path / "cp.tif", p.read(1)[15:, 10:30], GRID, nodata=255)
        crop_lab = write_tif(tmp_path / "cl.tif", lb.read(1)[15:, 10:30], GRID)
    part = score(pred, lab, CLASSES, region=[0.25, 0.5, 0.75, 1.0])
    assert part["confusion"] == score(str(crop_pred), str(crop_lab), CLASSES)["confusion"]
    assert part["pixels"] == 15 * 20 and part["region"] == [0.25, 0.5, 0.75, 1.0]
    with pytest.raises(GeosegError, match=r"region= needs left < right"):
        score(pred, lab, CLASSES, region=[0.5, 0, 0.5, 1])
    with pytest.raises(GeosegError, match=r"region= must be \[left, top, right, bottom\] fractions"):
        score(pred, lab, CLASSES, region=["left", 0, 1, 1])


def test_labels_of_a_set_come_from_a_folder_or_a_template(tmp_path):
    pred, lab = random_pair(tmp_path, "s1.tif", 8, seed=5)
    write_tif(tmp_path / "preds" / "s1_probs.tif", np.zeros((2, 30, 8), dtype=np.uint8))
    assert prediction_files(str(tmp_path / "preds")) == [pred]
    assert prediction_files(str(tmp_path / "preds" / "s*.tif")) == [pred]
    assert label_for(pred, str(tmp_path / "labels")) == lab
    (tmp_path / "labels" / "s1.tif").rename(tmp_path / "labels" / "s1_mask.tif")
    assert label_for(pred, str(tmp_path / "labels" / "{stem}_mask.tif")) == str(
        tmp_path / "labels" / "s1_mask.tif"
    )
    with pytest.raises(GeosegError, match=r"no labels for prediction .*s1.tif': looked for .*labels/s1.tif"):
        label_for(pred, str(tmp_path / "labels"))
    with pytest.raises(GeosegError, match="matches no class map"):
        prediction_files(str(tmp_path / "labels" / "*.png"))


def test_predictions_of_different_class_lists_are_not_pooled(tmp_path):
    first = write_tif(tmp_path / "a.tif", np.zeros((4, 4), dtype=np.uint8))
    second = write_tif(tmp_path / "b.tif", np.zeros((4, 4), dtype=np.uint8))
    for path, names in ((first, ["water", "land"]), (second, ["water", "urban"])):
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(
                **{CLASSES_TAG: json.dumps([{"code": i, "name": n} for i, n in enumerate(names)])}
            )
    with pytest.raises(GeosegError, match=r"b.tif' carries classes \['water', 'urban'\] but"):
        set_classes([str(first), str(second)], None)


def test_the_table_never_truncates_class_names(tmp_path):
    classes = ClassInfo.from_config(
        [{"code": 10, "name": "background"}, {"code": 20, "name": "impervious_surface"}]
    )
    pred, lab = random_pair(tmp_path, "a.tif", 12, seed=6)
    table = format_table(score(pred, lab, classes))
    header = table.splitlines()[-3]
    assert header.split() == ["background", "impervious_surface"]
