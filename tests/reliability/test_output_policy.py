"""Issue #35's cases of outputs that replaced a user's file, advice that did harm, and tracebacks.

Each ran to exit 0 (or printed a traceback) before the output policy (``geoseg/output_policy.py``);
the property over every command is ``test_outputs_never_replace.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import run_error, save_tiny_checkpoint, tiny_run, write_tif

pytestmark = pytest.mark.usefixtures("release_hydra_logging")


def run_ok(*args: str) -> None:
    from geoseg.cli import main

    main(list(args))


@pytest.fixture
def data(tmp_path, demo_root) -> Path:
    """A copy of the demo scenes, as a user's data folder."""
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    return root


def data_args(root: Path) -> list[str]:
    return [f"data.root={root}", "data.demo=null", "progress=false"]


# --- class 1: an output replaced a file geoseg did not write -------------------------------------------


def test_stats_output_never_replaces_a_label_of_the_split_or_a_checkpoint(data, tmp_path, capsys):
    label = data / "train/labels/scene_00.tif"
    ckpt = save_tiny_checkpoint(tmp_path / "best.pt", data / "train/images/scene_00.tif", classes=4)
    before = label.read_bytes(), ckpt.read_bytes()
    err = run_error(capsys, "stats", *data_args(data), f"output={label}")
    assert "is one of this command's inputs" in err and str(label) in err
    err = run_error(capsys, "stats", *data_args(data), f"output={ckpt}", "existing=overwrite")
    assert "is a checkpoint, not a band statistics file geoseg wrote" in err
    assert (label.read_bytes(), ckpt.read_bytes()) == before


def test_outputs_geoseg_wrote_are_replaced_only_with_existing_overwrite(data, tmp_path, capsys):
    out = tmp_path / "stats.json"
    run_ok("stats", *data_args(data), f"output={out}", "existing=error")
    first = out.read_text()
    err = run_error(capsys, "stats", *data_args(data), f"output={out}", "existing=error")
    assert "exists (a band statistics file); pass existing=overwrite" in err
    out.write_text(first.replace('"count"', '"count" ', 1))  # same statistics, other bytes
    run_ok("stats", *data_args(data), f"output={out}", "existing=skip")
    assert out.read_text() != first  # kept
    run_ok("stats", *data_args(data), f"output={out}", "existing=overwrite")
    assert out.read_text() == first  # a statistics file geoseg wrote is replaced


def test_evaluate_never_writes_its_metrics_over_the_label_or_prediction_it_scores(data, capsys):
    label, other = data / "val/labels/scene_04.tif", data / "val/labels/scene_05.tif"
    before = label.read_bytes(), other.read_bytes()
    for output in (label, other):
        err = run_error(capsys, "evaluate", f"prediction={other}", f"labels={label}", f"output={output}",
                        "existing=overwrite", "progress=false")  # fmt: skip
        assert "is one of this command's inputs" in err
    assert (label.read_bytes(), other.read_bytes()) == before


def test_export_never_writes_the_model_over_a_scene(data, tmp_path, capsys):
    scene = data / "train/images/scene_01.tif"
    ckpt = save_tiny_checkpoint(tmp_path / "best.pt", data / "train/images/scene_00.tif", classes=4)
    before = scene.read_bytes()
    err = run_error(capsys, "export", f"checkpoint={ckpt}", f"output={scene}")
    assert "is a raster, not an exported model geoseg wrote; geoseg never replaces it" in err
    assert scene.read_bytes() == before and not Path(f"{scene}.json").exists()


def test_demo_data_never_claims_or_empties_a_folder_of_the_users(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "field_survey.csv").write_text("id,crop\n1,wheat\n")
    for extra in ([], ["overwrite=true"], ["existing=overwrite"]):
        err = run_error(capsys, "demo-data", f"root={mine}", "size=64", *extra)
        assert "is not a demo data folder (it holds field_survey.csv)" in err
    assert sorted(p.name for p in mine.iterdir()) == ["field_survey.csv"]


def test_demo_data_overwrite_replaces_only_its_own_files(tmp_path):
    root = tmp_path / "demo"
    run_ok("demo-data", f"root={root}", "size=64")
    (root / "stats.json").write_text("{}")  # a file of the user's in the demo folder
    (root / "train/notes.txt").write_text("mine")
    before = (root / "train/images/scene_00.tif").read_bytes()
    run_ok("demo-data", f"root={root}", "size=96", "existing=overwrite")
    with rasterio.open(root / "train/images/scene_00.tif") as src:
        assert src.shape == (96, 96)
    assert (root / "train/images/scene_00.tif").read_bytes() != before
    assert (root / "stats.json").read_text() == "{}" and (root / "train/notes.txt").read_text() == "mine"


def test_a_run_folder_holding_a_users_files_is_refused_before_hydra_writes_into_it(data, capsys):
    (data / "stats.json").write_text('{"mine": true}')
    (data / "train.log").write_text("my notes")
    err = run_error(capsys, "train", *tiny_run(data), f"hydra.run.dir={data}")
    assert "holds files that no geoseg run wrote" in err
    assert (data / "stats.json").read_text() == '{"mine": true}' and (
        data / "train.log"
    ).read_text() == "my notes"
    assert not (data / ".hydra").exists()


def finished_run(folder: Path, miou: float = 0.228) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra/config.yaml").write_text("seed: 0\n")
    (folder / "best.pt").write_bytes(b"the best checkpoint")
    (folder / "summary.json").write_text(json.dumps({"best_miou": miou, "best_epoch": 4}))
    return folder


def test_a_second_run_into_a_finished_run_folder_is_refused(data, tmp_path, capsys):
    run = finished_run(tmp_path / "run")
    err = run_error(capsys, "train", *tiny_run(data), f"hydra.run.dir={run}")
    assert "holds a finished run (best val mIoU 0.2280 at epoch 4)" in err
    assert (run / "best.pt").read_bytes() == b"the best checkpoint"
    assert (run / ".hydra/config.yaml").read_text() == "seed: 0\n"  # Hydra's record of the run is kept
    (run / "summary.json").unlink()  # a stopped run: continue it, or choose a new folder
    err = run_error(capsys, "train", *tiny_run(data), f"hydra.run.dir={run}")
    assert "holds a stopped run (best.pt); continue it with trainer.resume=auto" in err


# --- class 4: advice that does harm ------------------------------------------------------------------


def test_a_stats_path_naming_a_label_is_refused_without_advice_to_delete_it(data, capsys):
    label = data / "train/labels/scene_00.tif"
    err = run_error(capsys, "stats", *data_args(data), f"data.stats_path={label}", "output=null")
    assert "is one of this command's inputs" in err or "is a raster, not a band statistics file" in err
    err = run_error(capsys, "train", *tiny_run(data, f"data.stats_path={label}"))
    assert "is a raster, not a band statistics file geoseg wrote" in err and "delete" not in err


def test_an_output_that_is_an_existing_folder_is_named_as_a_folder_not_a_full_disk(data, tmp_path, capsys):
    folder = tmp_path / "metrics.json"
    folder.mkdir()
    err = run_error(capsys, "stats", *data_args(data), f"output={folder}")
    assert "is a folder; name a file" in err and "disk" not in err


# --- class 5: tracebacks -----------------------------------------------------------------------------


def test_a_yaml_syntax_error_under_config_dir_is_one_line_naming_the_file(data, tmp_path, capsys):
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data/mine.yaml").write_text("defaults:\n  - demo\nroot: [unclosed\n  bands: x\n")
    for extra in ([], ["-m"]):  # with -m too, which skips the composition check
        err = run_error(capsys, "train", "--config-dir", str(conf), "data=mine", *extra)
        assert "mine.yaml' line 4, column 8 is not valid YAML" in err


def test_a_config_dir_that_does_not_exist_is_one_line(capsys, tmp_path):
    err = run_error(capsys, "stats", "--config-dir", str(tmp_path / "nothere"), "data=mine")
    assert "--config-dir" in err and "does not exist" in err


def test_convert_into_an_existing_file_is_one_line_and_a_tif_name_gets_a_file(data, tmp_path, capsys):
    scene, taken = data / "train/images/scene_00.tif", tmp_path / "notes.txt"
    taken.write_text("mine")
    err = run_error(capsys, "convert", f"input={scene}", f"output={taken}")
    assert "is a file, not a folder" in err and taken.read_text() == "mine"
    run_ok("convert", f"input={scene}", f"output={tmp_path / 'new.tif'}", "progress=false")
    assert (tmp_path / "new.tif").is_file()
    with rasterio.open(tmp_path / "new.tif") as out, rasterio.open(scene) as src:
        assert np.array_equal(out.read(), src.read())
    err = run_error(capsys, "convert", f"input={scene}", f"output={tmp_path / 'new.tif'}", "existing=error")
    assert "exists (a converted scene geoseg wrote)" in err
    write_tif(tmp_path / "user.tif", np.ones((1, 8, 8), np.uint8))
    err = run_error(
        capsys, "convert", f"input={scene}", f"output={tmp_path / 'user.tif'}", "existing=overwrite"
    )
    assert "is a raster, not a converted scene geoseg wrote" in err
