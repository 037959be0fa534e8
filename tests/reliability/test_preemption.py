"""SIGTERM / SIGUSR1, as SLURM sends before a time limit: checkpoint mid-epoch, exit 0, resume exactly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_process import (
    ENV,
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

from geoseg.engine.checkpoint import load_checkpoint
from geoseg.engine.preemption import Preemption


@pytest.fixture(scope="module")
def reference(demo_root: Path, tmp_path_factory) -> dict:
    """The weights of the same run, never interrupted (0 DataLoader workers; the signalled run uses 2)."""
    return uninterrupted_weights(demo_root, tmp_path_factory.getbasetemp() / "uninterrupted")


# SIGUSR1 takes the same path (the handler test below sends it in-process); its full run is slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)])
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
    assert f"at epoch 2, step {step}" in resumed.stdout  # as the stop line says (1-based, as the bars)
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


def rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of DDP rank ``rank`` among the descendants of ``launcher`` (read from its environment)."""
    pending = [launcher]
    while pending:
        pid = pending.pop()
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            kids = [
                int(k)
                for t in Path(f"/proc/{pid}/task").iterdir()
                for k in (t / "children").read_text().split()
            ]
        except OSError:
            continue
        if pid != launcher and f"RANK={rank}".encode() in env:
            return pid
        pending += kids
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks in /proc (Linux)")
def test_a_signal_to_one_ddp_rank_stops_every_rank_at_the_same_step(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node=2", "-m",
                "geoseg"]  # fmt: skip
    args = train_args(demo_root, run_dir, "data.chips_per_epoch=64")  # 2 ranks x 4 chips: 8 steps/epoch
    proc = subprocess.Popen([*torchrun, *args], cwd=tmp_path, env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    wait_for(proc, lambda: len(train_rows(run_dir)) >= 10, "step 10")
    rank1 = rank_pid(proc.pid, 1)
    assert rank1 is not None
    os.kill(rank1, signal.SIGUSR1)  # rank 1 only: rank 0 learns of it through the step's all-reduce
    out, _ = proc.communicate(timeout=120)

    assert proc.returncode == 0, out[-3000:]
    assert "SIGUSR1 received" in out and "stopped by a signal on another rank at epoch 2" in out
    saved = load_checkpoint(run_dir / "last.pt")
    assert saved["world_size"] == 2 and saved["progress"]["epoch_step"] == saved["step"] - 8 > 0
    assert not (run_dir / "summary.json").exists()

    resumed = subprocess.run([*torchrun, *args, "trainer.resume=auto"], cwd=tmp_path, env=ENV, text=True,
                             capture_output=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in train_rows(run_dir)] == list(range(1, 25))
    assert (run_dir / "summary.json").exists()


# A prelude that holds the run in its third optimizer step until it is killed: a run that finished while
# the second one started (24 fast steps) would leave an empty lock, and nothing to take over.
STALL_AFTER_2_STEPS = """
import time
import geoseg.engine.fit as fit
_step, _done = fit.optimizer_step, []
def stalling_step(*args, **kwargs):
    if len(_done) == 2:
        time.sleep(600)
    _done.append(1)
    return _step(*args, **kwargs)
fit.optimizer_step = stalling_step
"""


def test_a_second_run_in_the_same_folder_is_refused_and_a_dead_runs_lock_is_taken_over(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    first = start(train_args(demo_root, run_dir), tmp_path, prelude=STALL_AFTER_2_STEPS)
    wait_for(first, lambda: len(train_rows(run_dir)) >= 2, "step 2")
    second = run(train_args(demo_root, run_dir), tmp_path)
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(
        f"geoseg: error: run folder '{run_dir}' is in use by another geoseg train (PID {first.pid} on "
        f"{socket.gethostname()}, since "
    )
    assert line.endswith("wait for it to finish, or choose another hydra.run.dir")
    assert first.poll() is None  # killed while it holds the lock (a run that ends empties its lock file)
    kill(first, signal.SIGKILL)
    first.wait(timeout=60)
    third = run([*train_args(demo_root, run_dir), "trainer.max_steps=1"], tmp_path)
    assert third.returncode == 0, third.stderr
    assert f"was locked by PID {first.pid}, which is no longer running; taking it over" in third.stdout


def test_ctrl_c_checkpoints_exits_130_without_a_traceback(demo_root, tmp_path):
    """SIGINT to the whole process group: a terminal's Ctrl-C reaches the DataLoader workers too."""
    run_dir = tmp_path / "run"
    args = train_args(demo_root, run_dir, "data.num_workers=2")
    terminal = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"  # CI may ignore it
    proc = start(args, tmp_path, prelude=terminal + SLOW_STEPS)
    wait_for(proc, lambda: len(train_rows(run_dir)) >= 3, "step 3")
    kill(proc, signal.SIGINT)
    out, err = proc.communicate(timeout=120)  # it hung at exit, waiting on a worker
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert "stopped by SIGINT" in out and "trainer.resume=auto" in out
    step = load_checkpoint(run_dir / "last.pt")["step"]
    assert step >= 3 and not (run_dir / "summary.json").exists()


def test_a_second_ctrl_c_quits_at_once():
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may ignore it)
    try:
        with Preemption() as preempt:
            os.kill(os.getpid(), signal.SIGINT)
            assert preempt.signal_name == "SIGINT"
            with pytest.raises(SystemExit) as quit_now:
                os.kill(os.getpid(), signal.SIGINT)
        assert quit_now.value.code == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored on exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job ignores Ctrl-C: it still does
        with Preemption():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)
