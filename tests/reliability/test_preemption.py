"""SIGTERM / SIGUSR1, as SLURM sends before a time limit: checkpoint mid-epoch, exit 0, resume exactly."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from train_process import assert_same_weights, kill, run, start, train_args, train_rows, wait_for, weights

from geoseg.engine.checkpoint import load_checkpoint
from geoseg.engine.preemption import Preemption

SLOW_STEPS = """
import time
import geoseg.engine.fit as fit
_step = fit.optimizer_step
def slow_step(*args, **kwargs):  # 50 ms per step, so the signal lands well inside an epoch
    time.sleep(0.05)
    return _step(*args, **kwargs)
fit.optimizer_step = slow_step
"""


@pytest.fixture(scope="module")
def reference(demo_root: Path, tmp_path_factory) -> dict:
    """The weights of the same run, never interrupted (0 DataLoader workers; the signalled run uses 2)."""
    folder = tmp_path_factory.mktemp("reference")
    done = run(train_args(demo_root, folder / "run"), folder)
    assert done.returncode == 0, done.stderr
    return weights(folder / "run" / "last.pt")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_mid_epoch_exits_0_and_resume_matches_an_uninterrupted_run(
    demo_root, tmp_path, reference, sig
):
    run_dir = tmp_path / "run"
    args = train_args(demo_root, run_dir, "data.num_workers=2")
    proc = start(args, tmp_path, prelude=SLOW_STEPS)
    wait_for(proc, lambda: len(train_rows(run_dir)) >= 11, "step 11")  # epoch 2 of 3, 3 steps in
    kill(proc, sig)  # the whole process group, DataLoader workers included, as SLURM does
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    saved = load_checkpoint(run_dir / "last.pt")
    step = saved["step"]
    assert 11 <= step < 16 and saved["epoch"] == 1 and saved["progress"]["epoch_step"] == step - 8
    assert f"stopped by {sig.name} at epoch 2, step {step} of 24" in out
    assert "trainer.resume=auto" in out
    assert not (run_dir / "summary.json").exists(), "an unfinished run has no summary"
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == 1, "best.pt holds only validated weights"

    resumed = run([*args, "trainer.resume=auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at epoch 1, step {step}" in resumed.stdout
    assert (run_dir / "summary.json").exists()
    assert [r["step"] for r in train_rows(run_dir)] == list(range(1, 25))
    assert_same_weights(weights(run_dir / "last.pt"), reference)


def test_the_handler_records_the_signal_and_chains_to_the_previous_one():
    calls: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        with Preemption() as preempt:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert preempt.requested and preempt.signal_name == "SIGUSR1"
            assert calls == [], "the previous handler waits until the checkpoint is written"
            preempt.chain()
            assert calls == [signal.SIGUSR1]
        os.kill(os.getpid(), signal.SIGUSR1)  # restored on exit
        assert calls == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, before)
