"""SIGKILL during training (mid-epoch, and while a checkpoint is being written) and during prediction.

A SIGKILL runs no cleanup, so what survives is exactly what was on disk. ``trainer.resume=auto`` must
continue from the last complete checkpoint and end with the weights of a run that was never killed;
no file under a final name may be corrupt, and a killed ``geoseg predict`` leaves no output file.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
from train_process import (
    SLOW_STEPS,
    assert_same_weights,
    kill,
    run,
    start,
    train_args,
    train_rows,
    uninterrupted_weights,
    wait_for,
    weights,
)

from conftest import save_tiny_checkpoint
from geoseg.engine.checkpoint import load_checkpoint

# The second torch.save (epoch 2's last.pt) writes half of its bytes, then the process is SIGKILLed.
DIE_WHILE_SAVING = """
import io, os, signal
import torch
_save = torch.save
_calls = []
def dying_save(obj, f, *args, **kwargs):
    _calls.append(f)
    if len(_calls) < 3:  # last.pt and best.pt of epoch 1 complete; die writing epoch 2's last.pt
        return _save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _save(obj, buf, *args, **kwargs)
    with open(f, "wb") as fh:
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
"""


@pytest.fixture(scope="module")
def reference(demo_root: Path, tmp_path_factory) -> dict:
    """The weights of the same run, never interrupted."""
    return uninterrupted_weights(demo_root, tmp_path_factory.getbasetemp() / "uninterrupted")


def checkpoints_all_load(run_dir: Path) -> dict[str, dict]:
    """Every ``*.pt`` under a final name loads (weights only) and is a complete checkpoint."""
    found = {p.name: load_checkpoint(p) for p in run_dir.glob("*.pt")}
    assert "last.pt" in found
    return found


def test_sigkill_mid_epoch_then_resume_auto_ends_with_uninterrupted_weights(demo_root, tmp_path, reference):
    run_dir = tmp_path / "run"
    args = train_args(demo_root, run_dir)
    proc = start(args, tmp_path, prelude=SLOW_STEPS)
    # 8 steps per epoch: wait until epoch 1's last.pt exists and epoch 2 is 3 steps in
    wait_for(proc, lambda: (run_dir / "last.pt").exists() and len(train_rows(run_dir)) >= 11, "step 11")
    kill(proc, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    saved = checkpoints_all_load(run_dir)
    assert saved["last.pt"]["epoch"] == 1 and saved["last.pt"]["step"] == 8  # the epoch boundary before
    assert not (run_dir / "summary.json").exists()

    resumed = run([*args, "trainer.resume=auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "after epoch 1, step 8" in resumed.stdout
    assert (run_dir / "summary.json").exists()
    assert_same_weights(weights(run_dir / "last.pt"), reference)
    steps = [r["step"] for r in train_rows(run_dir)]
    assert steps == list(range(1, 25))  # the killed epoch's rows were replaced, not duplicated


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(demo_root, tmp_path, reference):
    run_dir = tmp_path / "run"
    args = train_args(demo_root, run_dir)
    killed = run(args, tmp_path, prelude=DIE_WHILE_SAVING)
    assert killed.returncode == -signal.SIGKILL

    saved = checkpoints_all_load(run_dir)  # last.pt is still epoch 1's, complete
    assert saved["last.pt"]["epoch"] == 1
    (partial,) = run_dir.glob(".last.pt.*.tmp")  # the half-written file never got the final name
    with pytest.raises(Exception, match="truncated or corrupt"):
        load_checkpoint(partial)

    resumed = run([*args, "trainer.resume=auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists(), "the next write of last.pt removes the stale temporary file"
    assert_same_weights(weights(run_dir / "last.pt"), reference)


# The prediction's writer is killed after its second block of rows.
DIE_WHILE_PREDICTING = """
import os, signal
from geoseg.inference import writer
_write = writer.PredictionWriter.write
_calls = []
def dying_write(self, *args, **kwargs):
    _calls.append(1)
    if len(_calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return _write(self, *args, **kwargs)
writer.PredictionWriter.write = dying_write
"""


def test_killed_predict_leaves_no_output_and_a_rerun_completes_it(tmp_path):
    rng = np.random.default_rng(0)
    scene = tmp_path / "scene.tif"
    from conftest import write_tif

    write_tif(scene, rng.integers(1, 1000, size=(3, 300, 600), dtype=np.uint16), tiled=True, block=64)
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt", scene)
    out = tmp_path / "out" / "classes.tif"
    args = ["predict", f"checkpoint={ckpt}", f"input={scene}", f"output={out}", "tile=64", "overlap=16",
            "panel=256", "probabilities=true", "device=cpu", f"hydra.run.dir={tmp_path}/log"]  # fmt: skip

    killed = run(args, tmp_path, prelude=DIE_WHILE_PREDICTING)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and not (out.parent / "classes_probs.tif").exists()
    assert list(out.parent.glob(".classes*.tmp")), "the partial files were under temporary names"

    again = run(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "classes.tif", "classes.tif.aux.xml", "classes_probs.tif"]  # fmt: skip

    clean = run([*args[:3], f"output={tmp_path}/clean.tif", *args[4:]], tmp_path)
    assert clean.returncode == 0, clean.stderr
    with rasterio.open(out) as a, rasterio.open(tmp_path / "clean.tif") as b:
        assert np.array_equal(a.read(), b.read()) and a.transform == b.transform
