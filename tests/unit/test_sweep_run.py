"""Sweeps through the command line: a failed job does not stop the others; the smoke sweep end to end."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

BN_ERROR = "data.batch_size=1 with BatchNorm2d layers: BatchNorm needs at least 2 chips per GPU"


def test_a_failed_job_is_logged_and_the_sweep_goes_on(tmp_path, geoseg):
    sweep = tmp_path / "sw"
    done = geoseg("train", "-m", "sweep=smoke", "norm=batchnorm", "data.batch_size=1,2",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    failed = sweep / "data.batch_size=1,norm=batchnorm" / "seed=0"
    last = [line for line in done.stderr.splitlines() if line.startswith("geoseg: error")]
    assert last == [f"geoseg: error in sweep job {failed}: {BN_ERROR}; raise data.batch_size or use "
                    "norm=groupnorm (or instancenorm, layernorm)"]  # fmt: skip
    assert "Traceback" not in done.stderr
    assert BN_ERROR in (failed / "train.log").read_text()
    finished = json.loads((sweep / "data.batch_size=2,norm=batchnorm/seed=0/summary.json").read_text())
    assert finished["batch_size_per_gpu"] == 2 and "bn_eval" in finished

    report = geoseg("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    md = (sweep / "results.md").read_text()
    assert "2 jobs: 1 finished, 1 failed, 0 missing." in md and BN_ERROR in md


@pytest.mark.slow
def test_smoke_sweep_then_report_end_to_end(tmp_path, geoseg):
    sweep = tmp_path / "smoke"
    done = geoseg("train", "-m", "sweep=smoke", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    jobs = sorted(p.relative_to(sweep).as_posix() for p in sweep.glob("*/seed=*"))
    norms = ("batchnorm", "groupnorm")
    assert jobs == [f"data.batch_size={b},norm={n}/seed=0" for b in (2, 4) for n in norms]
    lrs = {json.loads((sweep / j / "summary.json").read_text())["peak_lr"] for j in jobs}
    assert lrs == {2.5e-4, 5e-4}  # linear scaling from lr 1e-3 at batch 8

    report = geoseg("report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    with open(sweep / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["variant"], r["batch_size_per_gpu"], r["status"]) for r in rows] == [
        ("batchnorm", "2", "ok"), ("batchnorm", "4", "ok"), ("groupnorm", "2", "ok"), ("groupnorm", "4", "ok")
    ]  # fmt: skip
    assert all(0.0 <= float(r["val_miou"]) <= 1.0 and float(r["tiles_per_s"]) > 0 for r in rows)
    assert all(r["bn_recalibrated_miou"] for r in rows if r["variant"] == "batchnorm")
    assert not any(r["bn_recalibrated_miou"] for r in rows if r["variant"] == "groupnorm")
    md = (sweep / "results.md").read_text()
    table = md.split("## Val mIoU (final epoch)\n\n")[1].split("\n\n")[0].splitlines()
    assert table[0] == "| variant \\ batch per GPU | 2 | 4 |" and len(table) == 4
    assert [line.split(" | ")[0] for line in table[2:]] == ["| batchnorm", "| groupnorm"]
    assert sum(line.count("**") for line in table[2:]) == 4  # one bold best per batch column
    assert "4 jobs: 4 finished, 0 failed, 0 missing." in md
    for name in ("miou_vs_batch.png", "throughput_memory.png", "bn_statistics.png"):
        with Image.open(sweep / name) as img:
            img.verify()
            assert img.format == "PNG"
