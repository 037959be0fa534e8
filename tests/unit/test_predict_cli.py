"""``geoseg predict`` and ``evaluate`` end to end on a trained demo checkpoint, and under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from PIL import Image

from conftest import free_port, run_error, tiny_train_cfg, write_tif
from geoseg.cli import main
from geoseg.engine.fit import fit


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    fit(tiny_train_cfg(demo_root, "trainer.max_steps=2"), str(run))
    return run / "best.pt"


def cli_output(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``geoseg ARGS`` in-process to success; its stdout and stderr."""
    main(list(args))
    out = capsys.readouterr()
    return out.out + out.err


def test_predict_a_folder_then_evaluate_a_scene(
    demo_root, trained, tmp_path, capsys, monkeypatch, release_hydra_logging
):
    monkeypatch.chdir(tmp_path)  # in-process (the console script has its own test): Hydra's folders go here
    monkeypatch.setattr(sys, "argv", sys.argv)  # main() sets it as Hydra reads it
    out = cli_output(capsys, "predict", f"checkpoint={trained}", f"input={demo_root}/val/images",
                     f"output={tmp_path}/pred", "tile=64", "overlap=16", "quicklook=true", "cog=true",
                     f"labels={demo_root}/val/labels")  # fmt: skip
    assert "scene 2/2: scene_05" in out
    with Image.open(tmp_path / "pred" / "scene_04_quicklook.png") as look:  # input, prediction, label, errors
        assert look.width > 3 * look.height
    names = sorted(os.listdir(tmp_path / "pred"))
    assert names == ["scene_04.tif", "scene_04.tif.aux.xml", "scene_04_quicklook.png", "scene_05.tif",
                     "scene_05.tif.aux.xml", "scene_05_quicklook.png"]  # fmt: skip
    with rasterio.open(tmp_path / "pred" / "scene_04.tif") as pred:
        assert pred.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    out = cli_output(capsys, "evaluate", f"prediction={tmp_path}/pred/scene_04.tif",
                     f"labels={demo_root}/val/labels/scene_04.tif", "quicklook=true")  # fmt: skip
    with Image.open(tmp_path / "pred" / "scene_04_errors.png") as look:  # prediction, label, errors
        assert 2.2 * look.height < look.width < 4 * look.height
    metrics = json.loads((tmp_path / "pred" / "scene_04_metrics.json").read_text())
    assert set(metrics["iou"]) == {"water", "vegetation", "bare_soil", "built_up"}
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics["confusion"]) == 4
    assert "confusion (rows: labels" in out
    out = cli_output(capsys, "evaluate", f"prediction={tmp_path}/pred", f"labels={demo_root}/val/labels",
                     "region=[0,0.5,1,1]")  # fmt: skip
    pooled = json.loads((tmp_path / "pred" / "metrics_region-0-0.5-1-1.json").read_text())  # named apart
    assert [os.path.basename(s["labels"]) for s in pooled["scenes"]] == ["scene_04.tif", "scene_05.tif"]
    summed = np.sum([s["confusion"] for s in pooled["scenes"]], axis=0)
    assert pooled["confusion"] == summed.tolist() and pooled["region"] == [0.0, 0.5, 1.0, 1.0]
    assert pooled["pixels"] < 2 * metrics["pixels"]  # the bottom halves only
    assert "2 scenes of" in out


def test_predict_errors_are_one_line(
    demo_root, trained, tmp_path, capsys, monkeypatch, release_hydra_logging
):
    monkeypatch.chdir(tmp_path)  # in-process: the console script's own path is tested in test_cli
    line = run_error(capsys, "predict", f"checkpoint={tmp_path}/nope.pt", f"input={demo_root}/val/images",
                     "output=x")  # fmt: skip
    assert "nope.pt' does not exist" in line and "outputs/train/latest" in line
    assert "trainer.resume" not in line  # a training option: no use to predict
    line = run_error(capsys, "predict", f"checkpoint={trained}", f"input={demo_root}/val/images", "output=x",
                     f"labels={demo_root}/val/labels")  # fmt: skip
    assert "add quicklook=true" in line
    two_bands = write_tif(tmp_path / "rgb.tif", np.ones((2, 64, 64), dtype="uint16"))
    assert "has 2 bands but" in run_error(capsys, "predict", f"checkpoint={trained}", f"input={two_bands}",
                                          "output=p.tif")  # fmt: skip
    assert "missing input=, output=" in run_error(capsys, "predict", f"checkpoint={trained}")


def test_two_torchrun_ranks_split_the_scenes(demo_root, trained, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           f"--master-port={free_port()}", "-m", "geoseg", "predict", f"checkpoint={trained}",
           f"input={demo_root}/val/images", f"output={tmp_path}/p", "tile=64", "overlap=16",
           "device=cpu"]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "p")) == [
        "scene_04.tif", "scene_04.tif.aux.xml", "scene_05.tif", "scene_05.tif.aux.xml"]  # fmt: skip
    log = res.stdout + res.stderr
    assert "rank 0 predicts 1 of 2 scenes" in log and "rank 1 predicts 1 of 2 scenes" in log


def test_ranks_check_every_output_before_any_rank_writes(
    demo_root, trained, tmp_path, monkeypatch, compose_config
):
    """Rank 0 must not write a scene before rank 1 has checked it (it would find it as 'existing')."""
    from geoseg.commands import predict as command
    from geoseg.engine.distributed import DistInfo

    calls: list[str] = []
    prepare = command.prepare
    monkeypatch.setattr(command, "init_distributed", lambda *a, **k: DistInfo(rank=1, world_size=2))
    monkeypatch.setattr(command, "prepare", lambda *a: calls.append("prepare") or prepare(*a))
    monkeypatch.setattr(command, "barrier", lambda info: calls.append("barrier"))
    monkeypatch.setattr(command, "predict_scene", lambda *a: calls.append("predict") or {})
    cfg = compose_config("predict", f"checkpoint={trained}", f"input={demo_root}/val/images",
                         f"output={tmp_path}/p", "device=cpu")  # fmt: skip
    command.run(cfg)
    assert calls == ["prepare", "barrier", "predict", "barrier"]  # rank 1 of 2 predicts 1 of 2 scenes
