"""Disk faults: an unwritable or nearly full output folder fails before training; a failed write mid-run
(here a real one: the file-size limit makes the kernel refuse the bytes) is one line and leaves no file."""

from __future__ import annotations

import json
import re
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from train_process import run, train_args

from conftest import save_tiny_checkpoint, write_tif
from geoseg.cli import main

# The child may write ~1 MB (logs, stats, metrics); a checkpoint or a prediction needs more.
FILE_SIZE_LIMIT = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)


def cli_error(args: list[str], capsys) -> str:
    """Run ``geoseg ARGS`` in this process; it must exit 2 with one ``geoseg: error:`` line."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("geoseg: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("geoseg: error: ").rstrip("\n")


def assert_write_error(done, what: str, path: Path, reason: str, fix: str) -> None:
    """Exit status 2, no traceback, and as the last line (after GDAL's and libraries' own lines) the one
    error line of a failed write of ``path``; ``reason`` is a regex of the OS reason."""
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(
        re.escape(f"geoseg: error: could not write {what} '{path}' (")
        + reason
        + r"; \d+ MiB free in "
        + re.escape(f"{path.parent}); nothing was written under that name. {fix}"),
        last,
    ), done.stderr


def test_a_run_folder_that_cannot_be_created_fails_before_any_work(demo_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    message = cli_error(train_args(demo_root, blocker / "run"), capsys)
    assert message == (
        f"cannot write to the run folder '{blocker / 'run'}' (Not a directory); choose a writable folder"
    )


def test_a_nearly_full_disk_fails_before_the_first_step(demo_root, tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**40, 2**40 - 5 * 2**20, 5 * 2**20))
    run_dir = tmp_path / "run"
    message = cli_error(train_args(demo_root, run_dir), capsys)
    assert re.fullmatch(
        re.escape(
            f"'{run_dir}' has 5 MiB free and three checkpoints (last.pt, best.pt, a temporary copy) needs "
        )
        + r"about \d+ MiB; free disk space or put the run on another disk with hydra\.run\.dir=\.\.\.",
        message,
    ), message
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "last.pt").exists()


def test_a_checkpoint_write_that_fails_is_one_line_and_leaves_no_file(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    done = run(train_args(demo_root, run_dir, "trainer.max_steps=1"), tmp_path,
               prelude=FILE_SIZE_LIMIT.format(limit=1_000_000))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert re.fullmatch(
        re.escape(f"geoseg: error: could not write checkpoint '{run_dir / 'last.pt'}' (write failed: ")
        + r".+; \d+ MiB free in "
        + re.escape(f"{run_dir}); nothing was written under that name. Free disk space, then rerun with ")
        + r"trainer\.resume=auto\.\n",
        done.stderr,
    ), done.stderr
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix in (".pt", ".tmp")) == []


@pytest.mark.parametrize("threads", [1, 2])  # 2: GDAL's compression threads never report the failure
def test_a_prediction_write_that_fails_is_one_line_and_leaves_no_file(tmp_path, threads):
    scene = write_tif(
        tmp_path / "scene.tif", np.random.default_rng(0).integers(1, 999, (3, 512, 512), "uint16")
    )
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt", scene)
    out = tmp_path / "out" / "pred.tif"
    args = ["predict", f"checkpoint={ckpt}", f"input={scene}", f"output={out}", "tile=128", "overlap=0",
            "probabilities=true", "device=cpu", f"hydra.run.dir={tmp_path}/log",
            f"write_threads={threads}"]  # fmt: skip
    done = run(args, tmp_path, prelude=FILE_SIZE_LIMIT.format(limit=200_000))
    assert_write_error(done, "the prediction", out, ".+", "Free disk space or set output= elsewhere.")
    assert list(out.parent.iterdir()) == []
    assert Path(out).exists() is False


def _job_for_report(sweep: Path) -> None:
    """One finished sweep job, as `geoseg train -m` leaves it."""
    job = sweep / "norm=batchnorm" / "seed=0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- norm=batchnorm\n- seed=0\n")
    (job / "train.log").write_text("")
    summary = {"val": {"miou": 0.5, "accuracy": 0.9, "iou": {"a": 0.4, "b": 0.6}}, "best_miou": 0.5,
               "seed": 0, "batch_size_per_gpu": 2, "global_batch_size": 2, "norm": "BatchNorm2d",
               "peak_lr": 1e-3, "tiles_per_s": 1.0, "peak_memory_mb": 1.0, "wall_seconds": 1.0,
               "steps": 1}  # fmt: skip
    (job / "summary.json").write_text(json.dumps(summary))


def _command(kind: str, demo_root: Path, tmp: Path) -> tuple[list[str], str, Path]:
    """``geoseg`` arguments, the kind of file and the file that the write fails on."""
    if kind == "stats":
        out = tmp / "out" / "stats.json"
        return ["stats", f"data.root={demo_root}", f"output={out}"], "band statistics", out
    if kind == "evaluate":
        label = write_tif(tmp / "label.tif", np.tile(np.arange(64, dtype=np.uint8) % 2, (64, 1)))
        pred = write_tif(tmp / "pred.tif", np.ones((64, 64), np.uint8), nodata=255)
        out = tmp / "out" / "metrics.json"
        args = ["evaluate", f"prediction={pred}", f"labels={label}", f"output={out}",
                "classes=[{code: 0, name: a}, {code: 1, name: b}]"]  # fmt: skip
        return args, "metrics", out
    if kind == "report":
        _job_for_report(tmp / "sweep")
        out = tmp / "out"
        return ["report", f"dir={tmp / 'sweep'}", f"output={out}"], "report table", out / "results.csv"
    out = tmp / "out" / "demo"
    return ["demo-data", f"root={out}", "size=64"], "demo data", out


@pytest.mark.parametrize("kind", ["stats", "evaluate", "report", "demo-data"])
def test_every_output_write_that_fails_is_one_line_and_leaves_no_file(demo_root, tmp_path, kind):
    """Issue 19 case 8: a failed write of stats.json, metrics or a report ended in a raw OSError."""
    args, what, target = _command(kind, demo_root, tmp_path)
    done = run([*args, f"hydra.run.dir={tmp_path}/log"], tmp_path, prelude=FILE_SIZE_LIMIT.format(limit=200))
    fix = "Free disk space or choose another folder, and rerun."
    assert_write_error(done, what, target, "File too large", fix)
    leftovers = [p.name for p in (tmp_path / "out").rglob("*")] if (tmp_path / "out").exists() else []
    assert leftovers == [], leftovers


def test_a_polygon_write_that_fails_is_one_line_and_leaves_no_file(tmp_path):
    """GDAL's GeoPackage writer raised pyogrio's FeatureError (not an OSError) through predict."""
    pixels = np.random.default_rng(0).integers(1, 999, (3, 128, 128), "uint16")
    scene = write_tif(tmp_path / "scene.tif", pixels)
    ckpt = save_tiny_checkpoint(tmp_path / "model.pt", scene)
    out = tmp_path / "out" / "pred.tif"
    args = ["predict", f"checkpoint={ckpt}", f"input={scene}", f"output={out}", "tile=64", "overlap=0",
            "vectorize=true", "check_stats=false", "device=cpu", f"hydra.run.dir={tmp_path}/log"]  # fmt: skip
    done = run(args, tmp_path, prelude=FILE_SIZE_LIMIT.format(limit=60_000))  # a class map fits, a .gpkg not
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "File too large" not in x]
    gpkg = out.with_suffix(".gpkg")
    assert line.startswith(f"geoseg: error: could not write the polygons '{gpkg}' ("), line
    assert line.endswith("nothing was written under that name. Free disk space or set output= elsewhere.")
    assert "Traceback" not in done.stderr and list(out.parent.iterdir()) == []
