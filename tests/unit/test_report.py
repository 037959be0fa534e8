"""``geoseg report``: a sweep folder of jobs (finished, failed, missing) into CSV, Markdown and PNG plots."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from geoseg.config import config_dir
from geoseg.errors import GeosegError
from geoseg.report.collect import collect, expected_params, not_params, parse_overrides
from geoseg.report.sweep import report_sweep

CLASSES = ["dry", "water"]


def write_job(
    root: Path, norm: str, batch: int, seed: int, miou: float | None, error: str | None = None
) -> Path:
    """A job folder as Hydra and `geoseg train` leave it; ``miou=None`` means the job died."""
    job = root / f"data.batch_size={batch},norm={norm}" / f"seed={seed}"
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"norm={norm}", f"data.batch_size={batch}", f"seed={seed}", "sweep=norm_ablation"]
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    log = "[2026-11-26 10:00:00,000][geoseg.engine.run][INFO] - run folder: x\n"
    if error:
        log += f"[2026-11-26 10:00:01,000][geoseg.cli][ERROR] - geoseg: error: {error}\n"
    (job / "train.log").write_text(log)
    if miou is not None:
        summary = {
            "val": {"miou": miou, "accuracy": 0.9, "iou": {"dry": miou + 0.05, "water": miou - 0.05}},
            "best_miou": miou + 0.01, "seed": seed, "batch_size_per_gpu": batch, "global_batch_size": batch,
            "norm": "BatchNorm2d" if norm == "batchnorm" else "GroupNorm", "peak_lr": 1e-3 * batch / 8,
            "tiles_per_s": 10.0 * batch, "peak_memory_mb": 1000.0 + batch, "wall_seconds": 60.0, "steps": 100,
            "train_eval": {"miou": miou + 0.1}, "generalization_gap": 0.1, "majority_baseline_miou": 0.28,
        }  # fmt: skip
        held = norm == "groupnorm"  # predict's default holds scene statistics for GroupNorm only
        summary["tiling"] = {"tiles": [64, 512], "overlap": 0, "scenes": 1,
                             "plain": {"change_pct": 2.0 if held else 0.5, "seam_score": 3.0,
                                       "miou_chip": miou, "miou_large": miou - 0.01},
                             "default": {"change_pct": 0.4 if held else 0.5, "seam_score": 5.0,
                                         "miou_chip": miou, "miou_large": miou}}  # fmt: skip
        if norm == "batchnorm":
            summary["bn_eval"] = {"running_stats_miou": miou, "batch_stats_miou": miou - 0.2,
                                  "recalibrated_miou": miou + 0.02}  # fmt: skip
        (job / "summary.json").write_text(json.dumps(summary))
    return job


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """2 norms x batch 2, 8 x seeds 0, 1 asked for: 6 finished, 1 failed, 1 never started."""
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      norm: batchnorm,groupnorm\n      data.batch_size: 2,8\n"
        "      seed: 0,1\n  overrides:\n    task:\n    - sweep=norm_ablation\n"
    )
    for norm, batch, values in [("batchnorm", 2, (0.5, 0.7)), ("groupnorm", 2, (0.8, 0.9)),
                                ("batchnorm", 8, (0.9, 0.8))]:  # fmt: skip
        for seed, miou in enumerate(values):
            write_job(root, norm, batch, seed, miou)
    write_job(root, "groupnorm", 8, 0, None, error="out of memory on rank 0")
    return root


def test_collect_sorts_jobs_into_finished_failed_and_missing(sweep_dir):
    sweep = collect(str(sweep_dir))
    assert len(sweep.jobs) == 7 and len(sweep.failed) == 1
    assert sweep.failed[0].error == "geoseg: error: out of memory on rank 0"
    assert sweep.missing == [{"norm": "groupnorm", "data.batch_size": "8", "seed": "1"}]


def test_report_writes_csv_markdown_and_valid_pngs(sweep_dir, tmp_path, caplog):
    out = tmp_path / "report"
    with caplog.at_level(logging.WARNING):
        result = report_sweep(str(sweep_dir), str(out), title="Norm ablation test")
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 and sum(r["status"] == "ok" for r in rows) == 6
    first = rows[0]  # sorted by variant, batch, seed
    assert (first["variant"], first["batch_size_per_gpu"], first["seed"]) == ("batchnorm", "2", "0")
    assert float(first["val_miou"]) == 0.5 and float(first["iou_water"]) == pytest.approx(0.45)
    assert float(first["bn_batch_stats_miou"]) == pytest.approx(0.3)
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed[0]["variant"] == "groupnorm" and "out of memory" in failed[0]["error"]

    md = (out / "results.md").read_text()
    assert md.startswith("# Norm ablation test\n")
    assert "8 jobs: 6 finished, 1 failed, 1 missing." in md
    miou_table = md.split("## Val mIoU (final epoch)\n\n")[1].split("\n\n")[0].splitlines()
    assert miou_table == [
        "| variant \\ batch per GPU | 2 | 8 |",
        "|---|---|---|",
        "| batchnorm | 0.600 ± 0.141 | **0.850 ± 0.071** |",
        "| groupnorm | **0.850 ± 0.071** | – |",
    ]
    assert "| batchnorm | 2 | 0.600 | 0.400 | 0.620 |" in md  # running, batch, recalibrated statistics
    assert "- missing: norm=groupnorm data.batch_size=8 seed=1" in md
    assert "out of memory on rank 0" in md

    for name in ("miou_vs_batch.png", "throughput_memory.png", "bn_statistics.png"):
        with Image.open(out / name) as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] > 300
    assert str(out / "miou_vs_batch.png") in result["written"]
    assert sum("missing:" in r.message or "failed:" in r.message for r in caplog.records) == 2


def test_an_unfinished_job_is_still_reported_and_singles_have_no_std(tmp_path):
    root = tmp_path / "s"
    write_job(root, "groupnorm", 4, 0, 0.75)
    write_job(root, "batchnorm", 4, 0, None)  # no ERROR line: killed or still running
    report_sweep(str(root))  # no multirun.yaml: nothing can be called missing
    md = (root / "results.md").read_text()
    assert "| groupnorm | 0.750 |" in md and "2 jobs: 1 finished, 1 failed, 0 missing." in md
    assert "no summary.json (failed, killed or still running)" in md
    assert not (root / "bn_statistics.png").exists()  # no finished BatchNorm job


def test_expected_params_expand_hydra_sweep_syntax_and_command_line_wins(tmp_path):
    path = tmp_path / "multirun.yaml"
    path.write_text(
        "hydra:\n  sweeper:\n    params:\n      norm: batchnorm,groupnorm\n      seed: range(0,3)\n"
        "  overrides:\n    task:\n    - norm=identity\n    - data=sen1floods11\n    - launcher=slurm\n"
    )
    expected = expected_params(str(path))
    assert expected == [{"norm": "identity", "seed": str(s), "data": "sen1floods11"} for s in range(3)]
    assert parse_overrides(["+x=1", "hydra.sweep.dir=/a", "sweep=smoke", "norm=groupnorm"]) == {
        "x": "1", "norm": "groupnorm"
    }  # fmt: skip


def test_report_errors_are_one_line(tmp_path):
    with pytest.raises(GeosegError, match="is not a folder"):
        collect(str(tmp_path / "nope"))
    with pytest.raises(GeosegError, match=r"no sweep jobs under .*run `geoseg train -m sweep=\.\.\.` first"):
        collect(str(tmp_path))


def test_geoseg_report_takes_the_folder_as_its_first_argument(sweep_dir, tmp_path, geoseg):
    done = geoseg("report", str(sweep_dir), f"output={tmp_path / 'r'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r" / "results.md").is_file() and "failed: " in done.stdout + done.stderr
    strict = geoseg("report", str(sweep_dir), f"output={tmp_path / 'r'}", "strict=true", cwd=tmp_path)
    assert strict.returncode == 2
    assert strict.stderr.strip().splitlines()[-1] == (
        "geoseg: error: 2 sweep jobs failed or are missing (strict=true)"
    )


def test_the_miou_plot_has_the_majority_baseline_on_a_0_to_1_axis_and_no_legend_covers_a_bar(
    sweep_dir, monkeypatch
):
    from geoseg.report import plots
    from geoseg.report.tables import job_rows

    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    rows = job_rows(collect(str(sweep_dir)))
    assert plots.majority_baseline(rows) == pytest.approx(0.28)
    assert plots.plot_miou_vs_batch(rows, "x.png", "t") and plots.plot_throughput_memory(rows, "y.png", "t")
    miou_ax = figures[0].axes[0]
    assert miou_ax.get_ylim() == (0.0, 1.0)
    baseline = [line for line in miou_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(baseline) == 1 and baseline[0].get_ydata()[0] == pytest.approx(0.28)
    assert "majority class everywhere (0.280)" in [t.get_text() for t in miou_ax.get_legend().get_texts()]
    zoom = figures[0].axes[1]  # the same lines framed by their error bars
    lows = [y for line in miou_ax.get_lines() if line.get_linestyle() != "--" for y in line.get_ydata()]
    assert 0.0 < zoom.get_ylim()[0] <= min(lows) and zoom.get_ylim()[1] < 1.0
    speed = figures[1]
    assert all(ax.get_legend() is None for ax in speed.axes) and len(speed.legends) == 1  # below the panels


@pytest.mark.parametrize(
    ("lows", "highs", "expected"),
    [([0.84, 0.838], [0.85, 0.849], (0.834, 0.854)),  # 12 thousandths: at least 0.02 tall, centred
     ([0.2, 0.5], [0.3, 0.6], (0.14, 0.66)),  # a wide range: 15% margins
     ([0.0], [0.99], (0.0, 1.0))],  # clipped to 0-1
)  # fmt: skip
def test_the_zoomed_miou_panel_frames_every_error_bar(lows, highs, expected):
    from geoseg.report.plots import zoom_limits

    assert zoom_limits(lows, highs) == pytest.approx(expected)


def test_the_keys_that_are_not_job_parameters_come_from_the_hydra_config():
    """One list: configs/hydra/train.yaml's folder-name exclusions, but seed (a parameter averaged over)."""
    listed = OmegaConf.load(config_dir() / "hydra" / "train.yaml").job.config.override_dirname.exclude_keys
    assert not_params() == set(listed) - {"seed"} and {"sweep", "trainer.resume"} <= not_params()
    overrides = ["norm=frn", "seed=2", "sweep=smoke", "trainer.progress=false", "hydra.run.dir=x"]
    assert parse_overrides(overrides) == {"norm": "frn", "seed": "2"}


def test_report_has_the_tiling_consistency_columns_and_tables(sweep_dir, tmp_path):
    out = tmp_path / "report"
    report_sweep(str(sweep_dir), str(out), title="t")
    with open(out / "results.csv") as fh:
        rows = {(r["variant"], r["batch_size_per_gpu"], r["seed"]): r for r in csv.DictReader(fh)}
    gn, bn = rows[("groupnorm", "2", "0")], rows[("batchnorm", "2", "0")]
    assert float(gn["tiling_change_pct"]) == 2.0 and float(gn["tiling_change_pct_default"]) == 0.4
    assert float(bn["tiling_change_pct_default"]) == 0.5 and gn["tiling_tiles"] == "64/512"
    text = (out / "results.md").read_text()
    plain = text.split("## Tiling: % of pixels whose class changes")[1].split("##")[0]
    default = text.split("## Tiling: the same with predict's default norm_stats")[1].split("##")[0]
    assert "| batchnorm | **0.50 ± 0.00** | **0.50 ± 0.00** |" in plain  # fewest changes in bold
    assert "| groupnorm | 2.00 ± 0.00 | – |" in plain
    assert "| groupnorm | **0.40 ± 0.00** | – |" in default
    assert "## Tiling: seam score" in text
