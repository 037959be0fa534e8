"""A run with nothing to learn (issue 35, class 2): a train or val split without one labelled pixel is
refused at start-up in one line naming the split, the cause and the fix; a run whose validations never
scored a pixel ends with an error, not status 0, and keeps its summary. Each test failed (status 0, or
chips of all-ignore targets) on the code before the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_bad_inputs import SIZE, make_root, train_args

from conftest import run_error, write_tif
from geoseg.cli import main

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)

CODES = "[0, 1, 2, 3]"  # the demo config's class codes, as the messages list them
VAL_PURPOSE = "no epoch can be validated (no val mIoU, no best.pt)"


def args(root: Path, *overrides: str) -> list[str]:
    """``geoseg train`` on ``root`` with its scene index kept under ``root``."""
    return train_args(root, f"data.cache_dir={root}/cache", *overrides)


def fill_label(root: Path, split: str, value: int, columns: slice = slice(None)) -> Path:
    """Set the label of ``split``'s scene to ``value`` in ``columns``; returns its path."""
    name = "a" if split == "train" else "v"
    path = root / split / "labels" / f"{name}.tif"
    label = np.random.default_rng(0).integers(0, 4, size=(SIZE, SIZE), dtype=np.uint8)
    label[:, columns] = value
    return write_tif(path, label, nodata=255)


def assert_no_epoch(root: Path) -> None:
    """The run stopped before its first epoch: no checkpoint, no metrics."""
    run = root / "run"
    assert not any((run / name).exists() for name in ("best.pt", "last.pt", "metrics.jsonl", "summary.json"))


def test_a_val_split_whose_labels_are_all_nodata_is_refused_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It trained, printed 'val mIoU nan' and 'best val mIoU -inf (epoch None)', wrote no best.pt, exit 0."""
    root = make_root(tmp_path / "data")
    label = fill_label(root, "val", 255)
    assert run_error(capsys, *args(root)) == (
        f"geoseg: error: the val split has no labelled pixel: its label files (e.g. '{label}') hold only the "
        f"values [255] (label nodata 255), none a data.classes code {CODES}, so {VAL_PURPOSE}; check "
        "data.classes, data.label_nodata and data.splits.val.labels"
    )
    assert_no_epoch(root)


def test_train_labels_null_is_refused_at_start_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What `geoseg init-data` writes when it finds no labels: 'train loss 0.0000', NaN steps, exit 0."""
    root = make_root(tmp_path / "data")
    assert run_error(capsys, *args(root, "data.splits.train.labels=null")) == (
        "geoseg: error: the train split has no label files: data.splits.train.labels is null, so there is "
        "nothing to learn from; set it to each image's label file, e.g. "
        "data.splits.train.labels='labels/{stem}.tif'"
    )
    assert_no_epoch(root)


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_manifest_without_a_label_column_is_refused_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], split: str
) -> None:
    """A manifest naming labels for one split only: the other split is named, with the manifest."""
    root = make_root(tmp_path / "data")
    manifest = root / "scenes.csv"
    rows = {"train": "train/images/a.tif,{label},train", "val": "val/images/v.tif,{label},val"}
    labels = {"train": "train/labels/a.tif", "val": "val/labels/v.tif"}
    manifest.write_text("image,label,split\n" + "\n".join(
        rows[s].format(label="" if s == split else labels[s]) for s in rows) + "\n")  # fmt: skip
    purpose = "there is nothing to learn from" if split == "train" else VAL_PURPOSE
    assert run_error(capsys, *args(root, f"data.manifest={manifest}")) == (
        f"geoseg: error: the {split} split has no label files: data.manifest '{manifest}' names no label for "
        f"its '{split}' rows (no label column, or empty), so {purpose}; add a label column with each "
        "image's label file"
    )
    assert_no_epoch(root)


@pytest.mark.parametrize(
    ("split", "overrides", "where"),
    [
        ("train", ["data.unknown_labels=ignore"], ""),  # counted by the chip sampler
        ("val", ["data.unknown_labels=ignore"], ""),  # read once, cached in the scene index
        ("val", ["data.splits.val.region=[0.5,0,1,1]"], " inside data.splits.val.region"),
    ],
    ids=["train-unmapped-codes", "val-unmapped-codes", "val-region-of-nodata"],
)
def test_labels_without_a_class_code_where_the_split_reads_them_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], split: str, overrides: list[str], where: str
) -> None:
    """Codes outside data.classes under data.unknown_labels=ignore, or a region whose labels are all
    nodata: what inspection cannot list is counted, and the split refused before any epoch."""
    root = make_root(tmp_path / "data")
    region = bool(where)
    label = fill_label(root, split, 255 if region else 7, slice(SIZE // 2, None) if region else slice(None))
    checks = f"data.label_nodata, data.splits.{split}.labels and data.splits.{split}.region" if region else (
        f"data.label_nodata and data.splits.{split}.labels")  # fmt: skip
    purpose = "there is nothing to learn from" if split == "train" else VAL_PURPOSE
    assert run_error(capsys, *args(root, *overrides)) == (
        f"geoseg: error: the {split} split has no labelled pixel: its label files (e.g. '{label}') have no "
        f"pixel{where} whose code is in data.classes {CODES} (all are nodata, ignore_index or unmapped "
        f"codes), so {purpose}; check data.classes, {checks}"
    )
    assert_no_epoch(root)
    if split == "val":  # the answer is kept for the next start
        assert f"labelled:{CODES}" in (root / "cache" / "scene-index.json").read_text()


def test_a_train_scene_without_a_label_file_is_skipped_not_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest row with an empty label cell: its chips had all-ignore targets (non-finite losses)."""
    root = make_root(tmp_path / "data")
    extra = write_tif(root / "train" / "images" / "b.tif", np.ones((3, SIZE, SIZE), np.uint16), nodata=0)
    manifest = root / "scenes.csv"
    manifest.write_text("image,label,split\ntrain/images/a.tif,train/labels/a.tif,train\n"
                        "train/images/b.tif,,train\nval/images/v.tif,val/labels/v.tif,val\n")  # fmt: skip
    short = ("trainer.max_steps=2", "trainer.diagnostics.train_max_chips=0")
    main(args(root, f"data.manifest={manifest}", *short))
    out = capsys.readouterr().out
    skipped = f"WARNING: training scene '{extra}' has no labelled pixel (no label file); it is skipped"
    assert sum(line.endswith(skipped) for line in out.splitlines()) == 1, out
    assert "non-finite loss" not in out
    assert (root / "run" / "best.pt").exists()


def test_a_run_whose_validations_never_scored_a_pixel_ends_with_an_error_and_keeps_its_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Val labels fine but the val image all nodata: every val mIoU NaN. It exited 0 without best.pt."""
    root = make_root(tmp_path / "data")
    write_tif(root / "val" / "images" / "v.tif", np.zeros((3, SIZE, SIZE), np.uint16), nodata=0)
    run = root / "run"
    line = run_error(capsys, *args(root, "trainer.max_steps=1", "trainer.diagnostics.train_max_chips=0",
                                   "trainer.keep_checkpoints=best"))  # fmt: skip
    assert line == (
        "geoseg: error: no validation of this run scored a pixel (val mIoU NaN every time: no val chip held "
        "a pixel both labelled and valid in its image), so it wrote no best.pt; check the val split's "
        f"labels, region and data.nodata (summary.json and last.pt are in {run})"
    )
    assert not (run / "best.pt").exists() and (run / "last.pt").exists()  # kept: the run did not finish well
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] is None and summary["steps"] == 1


def test_init_data_without_labels_says_train_needs_them_and_train_refuses_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init-data writes labels: null when it finds none; it said 'next: geoseg train', which then ran
    epochs of NaN losses and exited 0."""
    folder, conf = tmp_path / "scenes", tmp_path / "conf"
    folder.mkdir()
    for k in range(2):
        pixels = np.random.default_rng(k).integers(1, 999, (3, 160, 160), np.uint16)
        write_tif(folder / f"tile_{k}.tif", pixels, nodata=0)
    main(["init-data", str(folder), f"conf={conf}"])
    out = capsys.readouterr().out
    written = conf / "data" / "scenes.yaml"
    warning = "no labels were found for the train and val images (no label files found"
    assert out.count(warning) == 1 and f"{written} says labels: null there, so it cannot train" in out
    assert "checked: it loads" not in out
    assert "# CHECK: no labels found, so it cannot train" in written.read_text()
    run = tmp_path / "run"
    line = run_error(capsys, "train", "--config-dir", str(conf), "data=scenes", f"hydra.run.dir={run}",
                     f"data.cache_dir={tmp_path}/cache", "trainer.device=cpu")  # fmt: skip
    assert line == (
        "geoseg: error: the train split has no label files: data.splits.train.labels is null, so there is "
        "nothing to learn from; set it to each image's label file, e.g. "
        "data.splits.train.labels='labels/{stem}.tif'"
    )
    assert not (run / "last.pt").exists()
