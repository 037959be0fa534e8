"""Further messy inputs found while sweeping for the classes of issue 19 (beyond its ten cases): each
gave a raw traceback or a silently wrong answer before its fix."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_bad_inputs import make_root

from conftest import run_error, save_tiny_checkpoint, write_tif
from geoseg.data.build import load_scenes
from geoseg.data.data_options import check_data_config
from geoseg.data.scenes import inspect_scene
from geoseg.engine.run import check_splits
from geoseg.errors import GeosegError

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)


@pytest.fixture
def scored(tmp_path):
    """A prediction and a label for `geoseg evaluate`."""
    label = write_tif(tmp_path / "label.tif", (np.arange(64 * 64).reshape(1, 64, 64) % 4).astype(np.uint8))
    pred = write_tif(tmp_path / "pred.tif", np.ones((1, 64, 64), np.uint8), nodata=255)
    return [
        "evaluate",
        f"prediction={pred}",
        f"labels={label}",
        f"output={tmp_path}/m.json",
        "progress=false",
    ]


@pytest.mark.parametrize(("override", "message"), [
    ("classes=[{code: 0, name: a}, {code: 0, name: b}]", "classes= has duplicate codes: [0, 0]."),
    ("classes=[0,1,2,3]", "classes=: each entry needs an integer code, like {code: 1, name: water}; got 0."),
    ("classes=[{code: x, name: a}]", "classes=: each entry needs an integer code"),
    # duplicate names: the per-class metrics are keyed by name, so class 0's IoU was overwritten
    ("classes=[{code: 0, name: a}, {code: 1, name: a}]", "classes= has duplicate names ['a']; give every"),
    ("label_nodata=abc", "label nodata 'abc' (data.label_nodata; label_nodata= for geoseg evaluate) must be"),
])  # fmt: skip
def test_evaluate_options_that_raised_deep_inside_are_one_line(scored, capsys, override, message):
    classes = [] if override.startswith("classes") else ["classes=[{code: 0, name: a}, {code: 1, name: b}]"]
    line = run_error(capsys, *scored, *classes, override)
    assert line.startswith(f"geoseg: error: {message}"), line


def test_train_refuses_duplicate_class_names_and_fractional_bands(tmp_path):
    cfg = {"chip_size": 32, "max_nodata_fraction": 0.5, "batch_size": 2, "ignore_index": 255,
           "num_workers": 0, "classes": [{"code": 0, "name": "a"}, {"code": 1, "name": "a"}]}  # fmt: skip
    with pytest.raises(GeosegError, match=r"data.classes has duplicate names \['a'\]"):
        check_data_config(cfg)
    cfg["classes"] = [{"code": 0, "name": "a"}, {"code": 1, "name": "b"}]
    with pytest.raises(GeosegError, match=r"data.bands: 1.5 is not a band; use 1-based whole numbers"):
        check_data_config({**cfg, "bands": [1.5]})  # was read as band 1 without a word


@pytest.fixture
def predict_args(tmp_path):
    rng = np.random.default_rng(0)
    scene = write_tif(tmp_path / "s.tif", rng.integers(1, 999, (3, 64, 64), dtype=np.uint16),
                      descriptions=["red", "green", "blue"])  # fmt: skip
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", scene)
    out = tmp_path / "out" / "p.tif"
    return out, ["predict", f"checkpoint={ckpt}", f"input={scene}", f"output={out}", "tile=64", "overlap=0",
                 "device=cpu", "progress=false"]  # fmt: skip


@pytest.mark.parametrize(("override", "message"), [
    ("quicklook_bands=3", "quicklook_bands=3 must list 1 or 3 bands"),
    ("quicklook_bands=[red,green,nope]", "quicklook_bands: 'nope' is not a band name of"),
    ("quicklook_bands=[0,1,2]", "quicklook_bands: 0 is not a band of"),
    ("nodata=abcdef", "nodata='abcdef' must be a number, a list of one number (or null) per band"),
    ("stats_warn=-1", "stats_warn=-1 must be a positive number of training stds"),
])  # fmt: skip
def test_predict_options_are_checked_before_any_output_is_written(predict_args, capsys, override, message):
    out, args = predict_args
    line = run_error(capsys, *args, "quicklook=true", override)
    assert line.startswith(f"geoseg: error: {message}"), line
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # the class map was written first


def test_quicklook_bands_by_name_are_resolved(predict_args, capsys):
    out, args = predict_args
    from geoseg.cli import main

    main([*args, "quicklook=true", "quicklook_bands=[blue,green,red]"])  # a TypeError before
    assert out.with_name("p_quicklook.png").exists()


def test_a_manifest_that_is_not_utf8_is_one_line(tmp_path):
    root = make_root(tmp_path / "data")
    manifest = root / "m.csv"
    manifest.write_bytes("image,label,split\ntrain/images/a.tif,train/labels/a.tif,train\n".encode("utf-16"))
    cfg = {"root": str(root), "manifest": str(manifest),
           "classes": [{"code": c, "name": f"c{c}"} for c in range(4)], "ignore_index": 255, "chip_size": 32,
           "max_nodata_fraction": 0.5, "batch_size": 2, "num_workers": 0}  # fmt: skip
    with pytest.raises(
        GeosegError, match=r"manifest '.*m.csv' is not UTF-8 text \(byte 0: .*\); save it as UTF-8"
    ):
        load_scenes(cfg, "train")


def test_stats_options_are_one_line(tmp_path, capsys):
    root = make_root(tmp_path / "data")
    base = ["stats", f"data.root={root}", "data.demo=null", "progress=false", f"output={tmp_path}/s.json"]
    assert run_error(capsys, *base, "sample=abc").startswith("geoseg: error: sample='abc' must be a fraction")
    assert run_error(capsys, *base, "workers=-1").startswith(
        "geoseg: error: workers=-1 must be a whole number"
    )


def test_splits_with_other_band_counts_are_one_line_and_a_leak_is_warned(tmp_path, caplog):
    """An images pattern matching the label files blamed a stats file ('computed for bands [1]')."""
    root = make_root(tmp_path / "data")
    image, label = root / "train" / "images" / "a.tif", root / "train" / "labels" / "a.tif"
    with pytest.raises(
        GeosegError, match=r"the train scenes have 1 band\(s\) .* but the val scenes 3 .*label files"
    ):
        check_splits([inspect_scene(str(label), None)], [inspect_scene(str(image), None)])
    with caplog.at_level(logging.WARNING):
        left = inspect_scene(str(image), None, region=[0, 0, 0.6, 1])
        check_splits([left], [inspect_scene(str(image), None, region=[0.5, 0, 1, 1])])  # overlap: 0.5-0.6
    assert "is also a train scene and their regions overlap" in caplog.text
    caplog.clear()
    check_splits([left], [inspect_scene(str(image), None, region=[0.75, 0, 1, 1])])  # disjoint: fine
    assert "overlap" not in caplog.text


def test_a_label_with_several_bands_is_warned(tmp_path, caplog):
    root = make_root(tmp_path / "data")
    two = write_tif(tmp_path / "two.tif", np.zeros((2, 64, 64), np.uint8), nodata=255)
    with caplog.at_level(logging.WARNING):
        inspect_scene(str(root / "train" / "images" / "a.tif"), str(two), class_codes=[0, 1, 2, 3])
    assert "has 2 bands; only band 1 is read as class codes" in caplog.text
