"""Helpers of the reliability tests: ``geoseg train`` in a child process, watched, signalled, compared."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import tiny_run
from geoseg.engine.checkpoint import load_checkpoint

# A ``start``/``run`` prelude: 50 ms more per optimizer step, so a test's signal or kill lands well inside
# an epoch (8 steps) instead of racing it.
SLOW_STEPS = """
import time
import geoseg.engine.fit as fit
_step = fit.optimizer_step
def slow_step(*args, **kwargs):
    time.sleep(0.05)
    return _step(*args, **kwargs)
fit.optimizer_step = slow_step
"""

ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_args(root: Path, run: Path, *overrides: str) -> list[str]:
    """``geoseg train`` arguments for a tiny CPU run of 3 epochs x 8 steps on the 128-px demo scenes."""
    return ["train", f"hydra.run.dir={run}", *tiny_run(
        root, "data.chips_per_epoch=32", "trainer.max_epochs=3", "trainer.diagnostics.train_max_chips=0",
        "trainer.diagnostics.bn_statistics=false", *overrides,
    )]  # fmt: skip


def start(args: list[str], cwd: Path, prelude: str = "") -> subprocess.Popen:
    """Start ``geoseg ARGS`` in its own session (so a signal can reach its DataLoader workers too).

    ``prelude`` is Python run first in the child, e.g. a patch that kills the process mid-write.
    """
    code = f"{prelude}\nimport sys\nfrom geoseg.cli import main\nmain(sys.argv[1:])"
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=ENV, text=True, stdout=pipe,
                            stderr=pipe, start_new_session=True)  # fmt: skip


def run(args: list[str], cwd: Path, prelude: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``geoseg ARGS`` to the end; returns the completed process with its output."""
    proc = start(args, cwd, prelude)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def train_rows(run_dir: Path) -> list[dict]:
    """The complete ``train`` rows of ``metrics.jsonl`` so far."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the line being written
            continue
        if row.get("kind") == "train":
            rows.append(row)
    return rows


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 180) -> None:
    """Poll ``ready()`` every 10 ms until it is true; fail with the child's output if it exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the child exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            kill(proc, signal.SIGKILL)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def kill(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the child's whole process group, as SLURM signals every process of a step."""
    os.killpg(proc.pid, sig)


def weights(path: Path) -> dict[str, torch.Tensor]:
    """The model state of a checkpoint (loaded the way geoseg loads it: weights only)."""
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Every parameter and buffer bit-identical."""
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def uninterrupted_weights(root: Path, folder: Path) -> dict[str, torch.Tensor]:
    """The final weights of the :func:`train_args` run, never interrupted: what a resumed run must reach.

    ``folder`` is shared by the test modules of a session, so the run happens once.
    """
    last = folder / "run" / "last.pt"
    if not (folder / "run" / "summary.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        done = run(train_args(root, folder / "run"), folder)
        assert done.returncode == 0, done.stderr
    return weights(last)
