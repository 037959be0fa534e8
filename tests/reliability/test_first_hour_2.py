"""A new user's first hour, round 2 (issue 36): init-data judging files by their names, end-of-run work
nobody asked for, polygon filters in the wrong units, and evaluate's region outputs and baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, write_tif

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)


def run_logged(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``geoseg ARGS`` in-process: (exit status, its stdout and stderr together, where Hydra logs)."""
    code, out, err = run_cli(capsys, *args)
    return code, out + err


# --- item 1: init-data judges a file by what the user says, then by its content, its name last ---------


def road_folder(root: Path, image: str, label: str) -> Path:
    """One 1-band road scene (continuous uint16 values) named ``image`` and its 0/1 label ``label``."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    write_tif(root / image, rng.integers(1, 4000, (160, 160), dtype="uint16"))
    write_tif(root / label, (rng.random((160, 160)) < 0.3).astype("uint8"))
    return root


def init_data(capsys, monkeypatch, tmp_path: Path, root: Path, *args: str) -> tuple[int, str, str]:
    """``geoseg init-data ROOT conf=<tmp>/conf`` run in tmp_path: (status, config text, log)."""
    monkeypatch.chdir(tmp_path)  # check_loads caches the scene index under ./outputs
    code, log = run_logged(capsys, "init-data", str(root), f"conf={tmp_path / 'conf'}", *args)
    path = tmp_path / "conf" / "data" / f"{root.name}.yaml"
    return code, path.read_text() if path.exists() else "", log


@pytest.mark.parametrize(
    ("image", "label", "args"),
    [
        ("road_mask_input.tif", "road_label.tif", []),  # 'input' after 'mask': an image
        ("road_mask.tif", "road_label.tif", []),  # both named like labels: the continuous one is the image
        ("road_mask_input.tif", "road_truth.tif", ["images=road_mask_input.tif", "labels=road_truth.tif"]),
    ],
)
def test_a_road_image_named_like_a_mask_is_taken_for_the_image(
    tmp_path, capsys, monkeypatch, image, label, args
):
    """It said "no GeoTIFF images" for each, and images= gave the same error (the name check ran first)."""
    root = road_folder(tmp_path / "roads", image, label)
    code, text, log = init_data(capsys, monkeypatch, tmp_path, root, *args)
    assert code == 0, log
    assert f'train: {{images: "{image}", labels: "{label}", region: [0, 0, 0.8, 1]}}' in text
    assert "- {code: 0, name: class_0}" in text and "- {code: 1, name: class_1}" in text
    assert "checked: it loads (1 train and 1 val scenes inspected)" in log


def test_a_single_road_image_and_its_label_train_with_no_options(tmp_path, capsys, monkeypatch):
    root = road_folder(tmp_path / "roads", "road_mask_input.tif", "road_label.tif")
    code, _, log = init_data(capsys, monkeypatch, tmp_path, root)
    assert code == 0, log
    code, log = run_logged(
        capsys, "train", "--config-dir", str(tmp_path / "conf"), "data=roads",
        f"hydra.run.dir={tmp_path}/run", "data.chip_size=32", "data.batch_size=2", "data.chips_per_epoch=4",
        "data.num_workers=0",
        "encoder.depth=3", "model.decoder_channels=[16,8,8]", "trainer.device=cpu", "trainer.progress=false",
        "trainer.tensorboard=false", "trainer.latest_link=null", "trainer.max_steps=1",
    )  # fmt: skip
    assert code == 0, log
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 1


def test_a_folder_with_no_image_lists_what_each_file_was_taken_for(tmp_path, capsys, monkeypatch):
    root = tmp_path / "only_labels"
    root.mkdir()
    for k in range(7):
        write_tif(root / f"tile_{k}_mask.tif", np.full((64, 64), k % 2, "uint8"))
    code, _, log = init_data(capsys, monkeypatch, tmp_path, root)
    line = [x for x in log.splitlines() if x.startswith("geoseg: error")]
    assert code == 2 and len(line) == 1, log
    assert (
        f"no GeoTIFF was taken for an image under '{root}'; it holds 7 file(s): tile_0_mask.tif: label "
        "('mask' in its name); tile_1_mask.tif: label ('mask' in its name)" in line[0]
    )
    assert "; and 2 more. Name the images with images='GLOB' (relative to the folder, e.g. " in line[0]


def test_a_multiband_scene_named_like_a_label_is_an_image(tmp_path, capsys, monkeypatch):
    """A label is one band of class codes: 4 bands named ``*_seg_*`` are an image, whatever the words."""
    root = tmp_path / "s2"
    root.mkdir()
    write_tif(root / "area_seg_2021.tif", np.random.default_rng(0).integers(1, 999, (4, 160, 160), "uint16"))
    write_tif(root / "area_labels.tif", np.ones((160, 160), "uint8"))
    code, text, log = init_data(capsys, monkeypatch, tmp_path, root)
    assert code == 0, log
    assert 'images: "area_seg_2021.tif", labels: "area_labels.tif"' in text


# --- item 3: a plain `geoseg train` does no end-of-run work nobody asked for -----------------------------


def test_the_default_run_skips_the_diagnostics_and_every_sweep_keeps_them(compose_config):
    """The train-split eval and BatchNorm variants took ~60 s after the last epoch of a 1-min default run
    on a busy 2-core machine; `geoseg report` tabulates them, so the sweeps ask for them."""
    from geoseg.config import as_dict, config_dir
    from geoseg.engine.state import Diagnostics, TrainerOptions

    default = TrainerOptions.from_config(as_dict(compose_config("train").trainer))
    assert default.diagnostics == Diagnostics(train_max_chips=0, bn_statistics=False)
    for sweep in sorted((config_dir() / "sweep").glob("*.yaml")):
        cfg = compose_config("train", f"sweep={sweep.stem}", hydra=True)
        wanted = TrainerOptions.from_config(as_dict(cfg.trainer)).diagnostics
        assert wanted.train_max_chips > 0 and wanted.bn_statistics, sweep.name


# --- item 5: min_area= and simplify= say their unit, and take pixels -------------------------------------


def geographic_scene(tmp_path: Path) -> tuple[Path, Path]:
    """A 64x64 px, 3-band scene in EPSG:4326 (1e-4 degree pixels, ~10 m) and a tiny checkpoint for it."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from conftest import save_tiny_checkpoint

    img = np.random.default_rng(0).integers(1, 999, (3, 64, 64), dtype=np.uint16)
    image = write_tif(tmp_path / "wgs84.tif", img, from_origin(13.0, 52.0, 1e-4, 1e-4), CRS.from_epsg(4326))
    return image, save_tiny_checkpoint(tmp_path / "m.pt", image)


def predict_polygons(capsys, tmp_path: Path, out: str, *args: str) -> tuple[int, str]:
    image, checkpoint = geographic_scene(tmp_path)
    return run_logged(capsys, "predict", f"checkpoint={checkpoint}", f"input={image}",
                      f"output={tmp_path / out}", "tile=64", "overlap=0", "device=cpu", "progress=false",
                      "vectorize=true", "check_stats=false", *args)  # fmt: skip


def test_metric_looking_polygon_filters_on_a_geographic_scene_are_warned_with_the_fix(tmp_path, capsys):
    """min_area=20 simplify=0.5 on EPSG:4326 are degrees² and degrees: "0 polygons" with no word why."""
    code, log = predict_polygons(capsys, tmp_path, "a.tif", "min_area=20", "simplify=0.5")
    assert code == 0, log
    assert (
        "min_area=20 is in degrees² here (EPSG:4326), more than the whole scene (4.1e-05 degrees²), so it "
        "drops every polygon; give it in pixels instead, e.g. min_area=20px\n"
    ) in log
    assert (
        "simplify=0.5 is in degrees here (EPSG:4326): 5000 pixel widths, which collapses the polygons" in log
    )
    assert "min_area=20 degrees² or simplify=0.5 degrees dropped all" in log


def test_polygon_filters_in_pixels_work_on_any_crs_and_the_log_says_the_unit(tmp_path, capsys):
    code, log = predict_polygons(capsys, tmp_path, "b.tif", "min_area=4px", "simplify=0.5px")
    assert code == 0, log
    assert "in pixels instead" not in log and "has no polygons" not in log, log
    assert "polygons left out by min_area=4px (4e-08 degrees²) (after simplify=0.5px (5e-05 degrees))" in log
    code, log = predict_polygons(capsys, tmp_path, "c.tif", "min_area=20m")
    assert code == 2 and "min_area='20m' must be a number >= 0 in map units" in log and "min_area=20px" in log


def test_min_area_in_pixels_equals_the_same_area_in_map_units(tmp_path):
    from geoseg.classes import ClassInfo
    from geoseg.inference.vectorize import write_polygons

    arr = np.zeros((64, 64), np.uint8)
    arr[4:6, 4:6], arr[20:40, 20:40] = 1, 2  # 4 px and 400 px
    path = write_tif(tmp_path / "pred.tif", arr)  # 10 m pixels
    classes = ClassInfo([0, 1, 2], ["a", "b", "c"], [(0, 0, 0)] * 3)
    px = write_polygons(str(path), str(tmp_path / "px.gpkg"), classes, min_area="5px", simplify="1px")
    metres = write_polygons(str(path), str(tmp_path / "m.gpkg"), classes, min_area=500.0, simplify=10.0)
    assert px == metres == 2  # the 4-px square is left out either way


# --- item 6: evaluate names region scores apart and prints the majority-class baseline -------------------


def scored_pair(folder: Path, name: str, seed: int = 0) -> tuple[Path, Path]:
    """A 40x40 class map (classes land/water, geoseg's class tag) and its label: 70% land in the top half,
    all land in the bottom half; the prediction is right on 80% of the pixels."""
    import rasterio

    from geoseg.inference.writer import CLASSES_TAG

    rng = np.random.default_rng(seed)
    label = (rng.random((40, 40)) < 0.3).astype(np.uint8)
    label[20:] = 0
    pred = np.where(rng.random((40, 40)) < 0.8, label, 1 - label).astype(np.uint8)
    folder.mkdir(exist_ok=True)
    (folder.parent / "truth").mkdir(exist_ok=True)
    path = write_tif(folder / name, pred, nodata=255)
    with rasterio.open(path, "r+") as dst:
        dst.update_tags(
            **{CLASSES_TAG: json.dumps([{"code": 0, "name": "land"}, {"code": 1, "name": "water"}])}
        )
    return path, write_tif(folder.parent / "truth" / name, label)


def expected_baseline(label: Path, rows: slice = slice(None)) -> float:
    """mIoU of predicting the label's most frequent class everywhere: its share (IoU), 0 for the other."""
    import rasterio

    with rasterio.open(label) as src:
        values = src.read(1)[rows]
    share = max(np.mean(values == 0), np.mean(values == 1))
    return float(share / 2) if 0 < share < 1 else 1.0


def test_a_region_score_is_written_apart_from_the_whole_scene_one(tmp_path, capsys):
    pred, label = scored_pair(tmp_path / "preds", "a.tif")
    assert run_cli(capsys, "evaluate", f"prediction={pred}", f"labels={label}", "progress=false")[0] == 0
    whole = json.loads((tmp_path / "preds" / "a_metrics.json").read_text())
    code, _, _ = run_cli(capsys, "evaluate", f"prediction={pred}", f"labels={label}", "region=[0,0.5,1,1]")
    assert code == 0
    assert json.loads((tmp_path / "preds" / "a_metrics.json").read_text()) == whole  # untouched
    bottom = json.loads((tmp_path / "preds" / "a_metrics_region-0-0.5-1-1.json").read_text())
    assert bottom["region"] == [0.0, 0.5, 1.0, 1.0] and bottom["pixels"] == whole["pixels"] // 2


def test_evaluate_prints_and_saves_the_majority_class_baseline_per_scene_and_per_set(tmp_path, capsys):
    pred, label = scored_pair(tmp_path / "preds", "a.tif")
    scored_pair(tmp_path / "preds", "b.tif", seed=1)
    code, out, err = run_cli(capsys, "evaluate", f"prediction={pred}", f"labels={label}", "progress=false")
    assert code == 0, err
    metrics = json.loads((tmp_path / "preds" / "a_metrics.json").read_text())
    assert metrics["majority_class"] == "land"
    assert metrics["majority_baseline_miou"] == pytest.approx(expected_baseline(label))
    row = f"baseline  {metrics['majority_baseline_miou']:6.3f}"
    assert row in out + err and "(the most frequent label class, land, everywhere)" in out + err
    code, out, err = run_cli(capsys, "evaluate", f"prediction={tmp_path / 'preds'}",
                             f"labels={tmp_path / 'truth'}", "progress=false")  # fmt: skip
    assert code == 0, err
    pooled = json.loads((tmp_path / "preds" / "metrics.json").read_text())
    assert 0 < pooled["majority_baseline_miou"] < 1 and pooled["majority_class"] == "land"
    assert [s["majority_baseline_miou"] for s in pooled["scenes"]] == pytest.approx(
        [expected_baseline(tmp_path / "truth" / n) for n in ("a.tif", "b.tif")]
    )
    assert "scene    mIoU    base     acc" in out + err
