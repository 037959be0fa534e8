"""Issue #36, round 2: the resume hint leads back into the run it names, run folders work as checkpoints,
and the small lies and noise of the first hour are gone (norm line, --version, ONNX export, epoch numbers,
typo hint)."""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from train_process import run, train_rows

from conftest import compose_config, run_cli, run_error, save_tiny_checkpoint, tiny_run, write_tif
from geoseg.config import config_dir
from geoseg.engine.checkpoint import load_checkpoint
from geoseg.engine.state import Progress
from geoseg.models import build_model
from geoseg.models.norms import GroupNorm

# A ``start`` prelude: SIGTERM (as SLURM sends) to itself during optimizer step 10; the loop sees it at the
# vote of the next step and stops after step 11, 3 steps into epoch 2 (8 steps per epoch).
TERM_IN_STEP_10 = """
import os, signal
import geoseg.engine.fit as fit
_step, _done = fit.optimizer_step, []
def term_at_step_10(*args, **kwargs):
    _done.append(1)
    if len(_done) == 10:
        os.kill(os.getpid(), signal.SIGTERM)
    return _step(*args, **kwargs)
fit.optimizer_step = term_at_step_10
"""
HINT = re.compile(r"rerun with (trainer\.resume=auto hydra\.run\.dir=\S+) to continue")
FPN = ["model=fpn", "model.decoder_pyramid_channels=16", "model.decoder_segmentation_channels=32"]


def data_config(folder: Path, root: Path, chip_size: int) -> Path:
    """``folder/data/mine.yaml``: a user's data config (of the 128-px demo scenes) for --config-dir."""
    cfg = OmegaConf.load(config_dir() / "data" / "demo.yaml")
    cfg.merge_with({"root": str(root), "demo": None, "stats_path": str(root / "stats.json"),
                    "num_workers": 0, "chip_size": chip_size, "batch_size": 4, "chips_per_epoch": 32,
                    "val_stride": 64})  # fmt: skip
    (folder / "data").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "data" / "mine.yaml")
    return folder


def test_the_printed_resume_hint_continues_the_run_with_its_own_options(demo_root, tmp_path):
    start, elsewhere, run_dir = tmp_path / "start", tmp_path / "elsewhere", tmp_path / "run"
    start.mkdir()
    elsewhere.mkdir()
    conf = data_config(start / "conf", demo_root, chip_size=32)
    args = ["train", "--config-dir", "conf", "data=mine", f"hydra.run.dir={run_dir}", *FPN,
            "trainer.device=cpu", "trainer.progress=false", "trainer.tensorboard=false",
            "trainer.latest_link=null", "trainer.log_every=1", "trainer.max_epochs=2",
            "trainer.diagnostics.train_max_chips=0", "trainer.diagnostics.bn_statistics=false"]  # fmt: skip
    stopped = run(args, start, prelude=TERM_IN_STEP_10)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped by SIGTERM at epoch 2, step 11 of 16" in stopped.stdout
    hint = HINT.search(stopped.stdout)
    assert hint, stopped.stdout[-2000:]
    saved = {name: (run_dir / ".hydra" / name).read_bytes() for name in ("config.yaml", "hydra.yaml",
                                                                         "overrides.yaml")}  # fmt: skip
    data_config(conf, demo_root, chip_size=64)  # the user's data config changed since: the run keeps its own

    resumed = run(["train", *hint[1].split()], elsewhere)  # exactly the printed line, from another folder

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run_dir}/last.pt at epoch 2, step 11" in resumed.stdout  # as the stop line says
    assert (run_dir / "summary.json").exists()
    assert [r["step"] for r in train_rows(run_dir)] == list(range(1, 17))
    last = load_checkpoint(run_dir / "last.pt")
    assert last["meta"]["arch"] == "fpn" and last["config"]["data"]["chip_size"] == 32
    assert last["config"]["trainer"]["max_epochs"] == 2
    assert list(elsewhere.iterdir()) == [], "nothing (no demo data, no outputs/) where the resume was typed"
    assert {name: (run_dir / ".hydra" / name).read_bytes() for name in saved} == saved
    record = yaml.safe_load((run_dir / ".hydra" / "resume-1" / "overrides.yaml").read_text())
    assert record == ["trainer.resume=auto"]


def fake_run(folder: Path, root: Path, *overrides: str) -> Path:
    """A run folder's ``.hydra/`` as Hydra writes it for a tiny U-Net run on ``root`` (no training)."""
    task = tiny_run(root, *overrides)
    cfg = compose_config("train", *task, hydra=True)
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    runtime = {"cwd": str(folder), "choices": choices}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": runtime}}))
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("hydra")
    OmegaConf.save(OmegaConf.create(config), hydra_dir / "config.yaml")
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(task))
    return folder


@pytest.mark.parametrize(
    ("override", "was"),
    [
        ("model=fpn", "model=unet"),
        ("data.chip_size=64", "data.chip_size=32"),
        ("optim.optimizer.lr=0.1", "optim.optimizer.lr=0.001"),
        ("trainer.max_epochs=9", "trainer.max_epochs=5"),
    ],
)
def test_resume_refuses_an_option_that_changes_the_run(tmp_path, capsys, monkeypatch, override, was):
    """Model, data, optimizer and schedule stay the run's own: one line naming the option, nothing written.
    (``data.root`` is the run's own, so it is accepted: given again, it changes nothing.)"""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "no-data-here"
    run_dir = fake_run(tmp_path / "run", root)
    before = (run_dir / ".hydra" / "config.yaml").read_bytes()
    line = run_error(capsys, "train", "trainer.resume=auto", f"hydra.run.dir={run_dir}", f"data.root={root}",
                     "trainer.progress=true", override)  # fmt: skip
    assert line.startswith(f"geoseg: error: {override} cannot be changed when resuming the run in "
                           f"'{run_dir}' (it was started with {was}): ")  # fmt: skip
    assert "start a new run in a new folder" in line
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == before
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml",
                                                                      "overrides.yaml"]  # fmt: skip


def test_resume_names_a_misspelt_option_of_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = fake_run(tmp_path / "run", tmp_path / "data")
    args = ("train", "trainer.resume=auto", f"hydra.run.dir={run_dir}", "trainer.progres=true")
    assert run_error(capsys, *args) == (
        "geoseg: error: unknown option 'trainer.progres'; did you mean 'trainer.progress'? (the run in "
        f"'{run_dir}' has the options of its .hydra/config.yaml)"
    )


@pytest.fixture
def checkpoint_folders(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """A scene, a run folder with best.pt and last.pt, one with last.pt only, and one with neither."""
    rng = np.random.default_rng(0)
    image = write_tif(tmp_path / "scene.tif", rng.integers(1, 1000, size=(3, 48, 64), dtype=np.uint16))
    both, last_only, empty = tmp_path / "both", tmp_path / "last-only", tmp_path / "empty"
    for folder in (both, last_only, empty):
        folder.mkdir()
    save_tiny_checkpoint(both / "best.pt", image, seed=1)
    save_tiny_checkpoint(both / "last.pt", image, seed=2)
    save_tiny_checkpoint(last_only / "last.pt", image, seed=2)
    (empty / "train.log").write_text("")
    return image, both, last_only, empty


@pytest.mark.usefixtures("release_hydra_logging")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_predict_and_export_take_a_run_folder(checkpoint_folders, tmp_path, capsys, monkeypatch):
    image, both, last_only, empty = checkpoint_folders
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "export", f"checkpoint={both}", "format=torchscript", "tile=64",
                             "overlap=16")  # fmt: skip
    assert code == 0, err
    assert (both / "best.torchscript.pt").exists() and not (both / "last.torchscript.pt").exists()
    code, out, err = run_cli(capsys, "predict", f"checkpoint={last_only}", f"input={image}", "device=cpu",
                             f"output={tmp_path}/pred.tif", "tile=64", "overlap=16")  # fmt: skip
    assert code == 0, err
    assert f"checkpoint='{last_only}' has no best.pt" in out and "using its last.pt" in out
    assert (tmp_path / "pred.tif").exists()
    for command, *more in (("predict", f"input={image}", f"output={tmp_path}/p.tif"), ("export",)):
        line = run_error(capsys, command, f"checkpoint={empty}", *more)
        assert line == (f"geoseg: error: checkpoint='{empty}' is a folder with no best.pt or last.pt; give "
                        "the folder of a geoseg train run that wrote one, or a checkpoint file")  # fmt: skip


def test_the_norm_line_says_nothing_when_the_norm_is_the_models_own(caplog):
    import torch

    caplog.set_level(logging.INFO, logger="geoseg")
    decoder = {"decoder_channels": [16, 8, 8]}
    build_model("unet", "resnet18", 3, 2, torch.nn.BatchNorm2d, encoder_depth=3, decoder=decoder)
    assert not [r for r in caplog.records if "layers replaced" in r.getMessage()]
    build_model(
        "unet", "resnet18", 3, 2, functools.partial(GroupNorm, num_groups=4), encoder_depth=3, decoder=decoder
    )
    (line,) = [r.getMessage() for r in caplog.records if "layers replaced" in r.getMessage()]
    assert "BatchNorm2d×" in line and "-> GroupNorm×" in line


def test_version_imports_neither_torch_nor_smp():
    code = ("import sys\nfrom geoseg.cli import main\nmain(['--version'])\n"
            "print(sorted(m for m in ('torch', 'segmentation_models_pytorch') if m in sys.modules))"
            )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    first, imported = done.stdout.splitlines()
    assert done.returncode == 0 and first.startswith("geoseg ") and "(torch 2." in first and "GDAL " in first
    assert imported == "[]"


@pytest.mark.usefixtures("release_hydra_logging")
def test_onnx_export_prints_only_geosegs_lines(checkpoint_folders, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install '.[onnx]')")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install '.[onnx]')")
    _, both, _, _ = checkpoint_folders
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "export", f"checkpoint={both}/best.pt", "tile=64", "overlap=16")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1].startswith(f"wrote {both}/best.onnx and {both}/best.onnx.json (onnx; max |logit")
    assert [ln for ln in lines if ln.startswith(("norm=", "loaded ", "wrote "))] == lines, out
    assert "[torch.onnx]" not in err and "unused" not in err


@pytest.mark.parametrize(
    ("epoch", "epoch_step", "step", "said"),
    [(1, 2, 10, "at epoch 2, step 10"), (1, 0, 8, "after epoch 1, step 8")],
)
def test_a_runs_position_counts_epochs_from_1(epoch, epoch_step, step, said):
    assert Progress(epoch=epoch, epoch_step=epoch_step, step=step).position() == said


def test_a_misspelt_key_is_never_offered_with_a_plus(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = run_error(capsys, "stats", "data.chip_sise=128")
    assert line == ("geoseg: error: unknown option 'data.chip_sise'; did you mean 'data.chip_size'? "
                    "(every option: geoseg stats --help)")  # fmt: skip
    assert "+data" not in line
