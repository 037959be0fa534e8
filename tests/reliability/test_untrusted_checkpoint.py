"""Untrusted checkpoints are read with ``torch.load(weights_only=True)`` only: a pickle that carries code is
refused with one line by every command that reads one, and its code never runs."""

from __future__ import annotations

import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_error, save_tiny_checkpoint, write_tif
from geoseg.engine.checkpoint import load_checkpoint
from geoseg.errors import GeosegError, unpickling_detail

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)


class RunsCode:
    """An object whose unpickling runs a shell command (``os.system``) that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def scene(path: Path, seed: int = 0) -> Path:
    """A 64×64, 3-band uint16 scene (nodata 0, none in it)."""
    rng = np.random.default_rng(seed)
    return write_tif(path, rng.integers(1, 1000, size=(3, 64, 64), dtype=np.uint16), nodata=0)


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(checkpoint, marker): a real geoseg checkpoint with a code-carrying object added, and the file its
    code would create."""
    good = save_tiny_checkpoint(tmp_path / "good.pt", scene(tmp_path / "stats_source.tif"), classes=4)
    state = torch.load(good, weights_only=True)
    marker = tmp_path / "MARKER"
    state["progress"] = {"note": RunsCode(marker)}
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    return path, marker


def weights_only_refusal(path: Path) -> pickle.UnpicklingError:
    """The error torch's weights-only unpickler raises on ``path`` (and that it does raise)."""
    with pytest.raises(pickle.UnpicklingError) as info:
        torch.load(path, weights_only=True)
    assert "GLOBAL posix.system" in str(info.value)  # refused for the code, not for a broken file
    return info.value


def refusal_message(path: Path) -> str:
    """geoseg's one-line refusal of a checkpoint that holds pickled code."""
    return (
        f"checkpoint '{path}' holds pickled objects or code, which geoseg never loads "
        f"(torch.load(weights_only=True) refused it: {unpickling_detail(weights_only_refusal(path))}); "
        "use a checkpoint geoseg wrote"
    )


def test_the_payload_runs_code_when_unpickled_unsafely(evil: tuple[Path, Path]) -> None:
    """Control: ``torch.load(weights_only=False)`` in a child process does run the payload."""
    path, marker = evil
    code = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=99)
    assert done.returncode == 0, done.stderr
    assert marker.exists()


def test_load_checkpoint_refuses_the_pickle_and_runs_nothing(evil: tuple[Path, Path]) -> None:
    """geoseg's checkpoint reader raises its one-line weights-only error; the marker is never made."""
    path, marker = evil
    with pytest.raises(GeosegError) as info:
        load_checkpoint(path)
    assert str(info.value) == refusal_message(path)
    assert not marker.exists()


def test_predict_refuses_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], evil: tuple[Path, Path]
) -> None:
    """``geoseg predict checkpoint=evil.pt`` exits 2 with one line and writes nothing."""
    path, marker = evil
    image = scene(tmp_path / "scene.tif", seed=1)
    out = tmp_path / "pred.tif"
    args = ["predict", f"checkpoint={path}", f"input={image}", f"output={out}", "device=cpu"]
    assert run_error(capsys, *args) == f"geoseg: error: {refusal_message(path)}"
    assert not marker.exists() and not out.exists()


def train_args(tmp_path: Path, *overrides: str) -> list[str]:
    """``geoseg train`` of a tiny U-Net (depth 3, GroupNorm(4), like the checkpoint) on two new scenes."""
    root = tmp_path / "data"
    for split, seed in (("train", 2), ("val", 3)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        scene(root / split / "images" / "s.tif", seed)
        labels = np.random.default_rng(seed).integers(0, 4, size=(64, 64), dtype=np.uint8)
        write_tif(root / split / "labels" / "s.tif", labels, nodata=255)
    return [
        "train", f"hydra.run.dir={tmp_path}/run", f"data.root={root}", "data.demo=null",
        f"data.stats_path={root}/stats.json", "data.chip_size=32", "data.batch_size=4",
        "data.chips_per_epoch=16", "data.num_workers=0", "trainer.device=cpu", "trainer.progress=false",
        "trainer.tensorboard=false", "encoder.depth=3", "model.decoder_channels=[16,8,8]", "norm=groupnorm",
        "norm.num_groups=4", *overrides,
    ]  # fmt: skip


def test_train_resume_refuses_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], evil: tuple[Path, Path]
) -> None:
    """``geoseg train trainer.resume=evil.pt`` exits 2 with one line, before any training step."""
    path, marker = evil
    before = path.read_bytes()
    line = run_error(capsys, *train_args(tmp_path, f"trainer.resume={path}"))
    assert line == f"geoseg: error: {refusal_message(path)}"
    assert not marker.exists()
    assert not (tmp_path / "run" / "last.pt").exists()
    assert path.read_bytes() == before  # refused, never overwritten


def test_train_encoder_weights_refuse_the_pickle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], evil: tuple[Path, Path]
) -> None:
    """``encoder.weights=evil.pt`` (read by models/weights.py, not the checkpoint reader) is refused too."""
    path, marker = evil
    refused = next(line for line in str(weights_only_refusal(path)).splitlines() if "GLOBAL" in line)
    assert run_error(capsys, *train_args(tmp_path, f"encoder.weights={path}")) == (
        f"geoseg: error: encoder.weights={path} holds pickled objects or code, which geoseg never loads "
        f"(torch.load(weights_only=True) refused it: {refused}); save a plain state dict of tensors"
    )
    assert not marker.exists()
