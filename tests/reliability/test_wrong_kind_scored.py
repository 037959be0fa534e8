"""The wrong kind of file scored (issue 35, class 3): `geoseg evaluate` refuses a prediction that is not a
class map (geoseg's probabilities, several bands, floating-point values), alone or in a set, and labels
that are probabilities or fractional values, in one line naming the file and what to pass instead,
and writes no metrics. Each test failed (metrics written, or another message) on the code before the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_bad_inputs import SIZE, make_root, pixels, train_args

from conftest import run_error, save_tiny_checkpoint, write_tif
from geoseg.cli import main
from geoseg.inference.writer import CLASSES_TAG

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)

NAMES = ["water", "vegetation", "bare_soil", "built_up"]  # the demo config's classes, codes 0..3
CLASSES = [{"code": i, "name": n} for i, n in enumerate(NAMES)]
CLASSES_OPTION = "classes=[" + ", ".join(f"{{code: {i}, name: {n}}}" for i, n in enumerate(NAMES)) + "]"


def class_codes(seed: int = 0) -> np.ndarray:
    """A (SIZE, SIZE) uint8 map of the codes 0..3."""
    return np.random.default_rng(seed).integers(0, 4, size=(SIZE, SIZE), dtype=np.uint8)


def tagged(path: Path, **tags: str) -> Path:
    """``path`` with the class list (as geoseg predict writes it) and ``tags`` added."""
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(**{CLASSES_TAG: json.dumps(CLASSES)}, **tags)
    return path


def old_probabilities(path: Path) -> Path:
    """A probabilities raster as geoseg predict wrote it before the geoseg_raster tag: uint8 probability x
    255 per class, bands p_<class>, the scale tag. Band 1 is 0 or 1 (a confident model's p_water), so
    read as class indices it looks like a class map of classes 0 and 1."""
    band1 = (np.random.default_rng(1).random((SIZE, SIZE)) < 0.5).astype(np.uint8)
    probs = np.stack([band1, *[np.full((SIZE, SIZE), 85, np.uint8)] * 3])
    write_tif(path, probs, descriptions=[f"p_{n}" for n in NAMES])
    return tagged(path, scale="probability x 255")


def evaluate_args(prediction: Path, labels: Path, *overrides: str) -> list[str]:
    return ["evaluate", f"prediction={prediction}", f"labels={labels}", "progress=false", *overrides]


def no_metrics_written(folder: Path) -> bool:
    return not list(folder.rglob("*metrics.json"))


def test_the_probabilities_geoseg_predict_wrote_are_refused_naming_the_class_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """predict tags both outputs; evaluate prediction=x_probs.tif points to x.tif and scores nothing."""
    image = write_tif(tmp_path / "scene.tif", pixels(), nodata=0)
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt", image, classes=4)
    out = tmp_path / "x.tif"
    main(["predict", f"checkpoint={checkpoint}", f"input={image}", f"output={out}", "device=cpu",
          "progress=false", "probabilities=true", "tile=64", "overlap=0"])  # fmt: skip
    probs = tmp_path / "x_probs.tif"
    with rasterio.open(out) as classes, rasterio.open(probs) as p:
        assert classes.tags()["geoseg_raster"] == "class_map" and p.tags()["geoseg_raster"] == "probabilities"
    labels = write_tif(tmp_path / "truth.tif", class_codes())
    capsys.readouterr()
    assert run_error(capsys, *evaluate_args(probs, labels)) == (
        f"geoseg: error: '{probs}' is a probabilities raster written by geoseg predict, not a class map; "
        f"score '{out}'"
    )
    assert no_metrics_written(tmp_path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (old_probabilities, "is a probabilities raster written by geoseg predict, not a class map; score the "
         "class map geoseg predict wrote (its output= file)"),
        (lambda p: write_tif(p, np.stack([class_codes()] * 3)),
         "has 3 bands, so it is not a class map (one band of class indices); score the class map geoseg "
         "predict wrote (its output= file)"),
        (lambda p: write_tif(p, class_codes().astype(np.float32)),
         "holds float32 values, so it is not a class map (integer class indices); score the class map "
         "geoseg predict wrote (its output= file)"),
    ],
    ids=["probabilities-without-the-new-tag", "three-bands", "float32"],
)  # fmt: skip
def test_a_prediction_that_is_not_a_class_map_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    """Each was scored from band 1 as class indices and its metrics written."""
    prediction = make(tmp_path / "pred.tif")
    labels = write_tif(tmp_path / "truth.tif", class_codes())
    line = run_error(capsys, *evaluate_args(prediction, labels, CLASSES_OPTION))
    assert line == f"geoseg: error: '{prediction}' {message}"
    assert no_metrics_written(tmp_path)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda p: tagged(write_tif(p, class_codes(3)), geoseg_raster="probabilities"),
         "is a probabilities raster written by geoseg predict, not a class map"),
        (lambda p: tagged(write_tif(p, np.stack([class_codes(3)] * 2))),
         "has 2 bands, so it is not a class map (one band of class indices)"),
    ],
    ids=["probabilities-with-a-class-map-name", "two-bands"],
)  # fmt: skip
def test_a_set_holding_a_file_that_is_not_a_class_map_is_refused_before_any_is_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, what: str
) -> None:
    """Sets skip *_probs.tif by name only: a file whose name does not tell was pooled into the metrics."""
    preds, truth = tmp_path / "preds", tmp_path / "truth"
    preds.mkdir()
    truth.mkdir()
    for name in ("a", "b"):
        write_tif(truth / f"{name}.tif", class_codes(3))
    tagged(write_tif(preds / "a.tif", class_codes(3), nodata=255))
    odd = make(preds / "b.tif")
    assert run_error(capsys, *evaluate_args(preds, truth)) == (
        f"geoseg: error: '{odd}' {what}; leave it out of prediction= (a set is scored from class maps only)"
    )
    assert no_metrics_written(tmp_path)


def test_labels_that_are_probabilities_are_refused_by_evaluate_and_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """labels= a probabilities raster: its band 1 was scored as class codes (a warning about its bands)."""
    prediction = tagged(write_tif(tmp_path / "pred.tif", class_codes(), nodata=255))
    labels = old_probabilities(tmp_path / "truth_probs.tif")
    expected = (
        f"geoseg: error: label '{labels}' is a probabilities raster written by geoseg predict, not labels of "
        "class codes; pass the ground-truth label file"
    )
    assert run_error(capsys, *evaluate_args(prediction, labels)) == expected
    assert no_metrics_written(tmp_path)
    root = make_root(tmp_path / "data")
    labels = old_probabilities(root / "train" / "labels" / "a.tif")
    assert run_error(capsys, *train_args(root, f"data.cache_dir={root}/cache")) == expected.replace(
        str(tmp_path / "truth_probs.tif"), str(labels)
    )
    assert not (root / "run" / "last.pt").exists()


def test_labels_with_fractional_values_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A float label resampled with bilinear (fractions at class edges): those pixels were skipped with
    a warning and the rest scored."""
    codes = class_codes()
    prediction = tagged(write_tif(tmp_path / "pred.tif", codes, nodata=255))
    resampled = codes.astype(np.float32)
    resampled[:8] += 0.5  # an eighth of the pixels
    labels = write_tif(tmp_path / "truth.tif", resampled)
    assert run_error(capsys, *evaluate_args(prediction, labels)) == (
        f"geoseg: error: {8 * SIZE} pixels of label '{labels}' hold fractional values, so it is not a "
        "raster of class codes (resampled with bilinear or cubic?); pass labels of whole class codes, "
        "resampled with nearest"
    )
    assert no_metrics_written(tmp_path)
