"""Sweep jobs as rows (``results.csv``) and as norm × batch-size tables of mean ± std over seeds
(``results.md``).

A table's rows are the sweep's *variants*: the overrides that differ between jobs other than the
per-GPU batch size and the seed (for the norm ablation, the norm). Its columns are the per-GPU batch
sizes. Each cell aggregates the seeds; the best cell of each column is in bold.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from geoseg.report.collect import Job, Sweep, varying_keys

BATCH_KEY, SEED_KEY = "data.batch_size", "seed"

# (column, title, higher is better; None = no best to mark) of the tables in results.md, in order
TABLES: list[tuple[str, str, bool | None]] = [
    ("val_miou", "Val mIoU (final epoch)", True),
    ("best_miou", "Val mIoU (best epoch)", True),
    ("generalization_gap", "Train-split mIoU minus val mIoU (the generalisation gap)", None),
    (
        "tiling_change_pct",
        "Tiling: % of pixels whose class changes between tile = chip size and a large "
        "tile, each tile normalised by itself",
        False,
    ),
    (
        "tiling_change_pct_default",
        "Tiling: the same with predict's default norm_stats (scene statistics held "
        "for GroupNorm/InstanceNorm)",
        False,
    ),
    (
        "tiling_seam_score",
        "Tiling: seam score (change rate within 4 px of tile edges / elsewhere; 1 = no "
        "seams), each tile normalised by itself",
        None,
    ),
    ("tiling_miou_large", "Tiling: val mIoU at the large tile, each tile normalised by itself", True),
    ("tiling_miou_large_default", "Tiling: val mIoU at the large tile, predict's default norm_stats", True),
    ("tiles_per_s", "Training throughput (tiles/s)", True),
    ("peak_memory_mb", "Peak memory (MB; CUDA allocated, or process RSS on CPU)", False),
    ("wall_seconds", "Wall time per run (s)", False),
]
BN_COLUMNS = [
    ("bn_running_stats_miou", "running statistics (eval)"),
    ("bn_batch_stats_miou", "batch statistics"),
    ("bn_recalibrated_miou", "recalibrated"),
]


def variant_label(job: Job, keys: Sequence[str]) -> str:
    """The job's variant: its values of ``keys`` (``groupnorm``, or ``model=fpn,norm=groupnorm``)."""
    if not keys:
        return job.params.get("norm") or str((job.summary or {}).get("norm", "all"))
    if len(keys) == 1:
        return job.params.get(keys[0], "?")
    return ",".join(f"{k}={job.params.get(k, '?')}" for k in keys)


def job_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One flat row per job, finished or not, with the summary fields the report uses."""
    keys = [k for k in varying_keys(sweep.jobs) if k not in (BATCH_KEY, SEED_KEY)]
    rows = []
    for job in sweep.jobs:
        s = job.summary or {}
        val, bn = s.get("val") or {}, s.get("bn_eval") or {}
        batch = s.get("batch_size_per_gpu", job.params.get(BATCH_KEY))
        row: dict[str, Any] = {
            "job": job.path, "status": "ok" if job.ok else "failed", "variant": variant_label(job, keys),
            "batch_size_per_gpu": int(batch) if batch is not None else None,
            "global_batch_size": s.get("global_batch_size"), "seed": s.get("seed", job.params.get(SEED_KEY)),
            "norm": s.get("norm"), "peak_lr": s.get("peak_lr"), "steps": s.get("steps"),
            "val_miou": val.get("miou"), "best_miou": s.get("best_miou"), "val_accuracy": val.get("accuracy"),
            "majority_baseline_miou": s.get("majority_baseline_miou"),
            "train_miou": (s.get("train_eval") or {}).get("miou"),
            "generalization_gap": s.get("generalization_gap"),
            "bn_running_stats_miou": bn.get("running_stats_miou"),
            "bn_batch_stats_miou": bn.get("batch_stats_miou"),
            "bn_recalibrated_miou": bn.get("recalibrated_miou"),
            **tiling_fields(s.get("tiling") or {}),
            "tiles_per_s": s.get("tiles_per_s"), "peak_memory_mb": s.get("peak_memory_mb"),
            "wall_seconds": s.get("wall_seconds"), "device": s.get("device"), "amp": s.get("amp"),
        }  # fmt: skip
        row.update({f"iou_{name}": v for name, v in (val.get("iou") or {}).items()})
        row["error"] = job.error
        rows.append(row)
    return sorted(rows, key=lambda r: (r["variant"], r["batch_size_per_gpu"] or 0, str(r["seed"])))


def tiling_fields(tiling: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's ``tiling`` diagnostic as flat columns (None where the run did not measure it)."""
    plain, default = tiling.get("plain") or {}, tiling.get("default") or {}
    return {
        "tiling_tiles": "/".join(str(t) for t in tiling["tiles"]) if tiling.get("tiles") else None,
        "tiling_change_pct": plain.get("change_pct"), "tiling_change_pct_default": default.get("change_pct"),
        "tiling_seam_score": plain.get("seam_score"), "tiling_seam_score_default": default.get("seam_score"),
        "tiling_miou_chip": plain.get("miou_chip"), "tiling_miou_large": plain.get("miou_large"),
        "tiling_miou_chip_default": default.get("miou_chip"),
        "tiling_miou_large_default": default.get("miou_large"),
    }  # fmt: skip


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of ``rows`` with the union of their columns (per-class IoU columns differ by dataset)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def number(value: Any) -> float | None:
    """A finite float, or None for missing/NaN values."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def aggregate(rows: Sequence[Mapping[str, Any]], column: str) -> dict[tuple[str, int], list[float]]:
    """``(variant, batch) -> [value per seed]`` of the finished jobs that have ``column``."""
    cells: dict[tuple[str, int], list[float]] = {}
    for row in rows:
        value = number(row.get(column))
        if row["status"] == "ok" and value is not None and row["batch_size_per_gpu"] is not None:
            cells.setdefault((row["variant"], row["batch_size_per_gpu"]), []).append(value)
    return cells


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def pivot_markdown(
    cells: Mapping[tuple[str, int], list[float]], higher_is_better: bool | None, digits: int
) -> str:
    """Variants × batch sizes, ``mean ± std`` per cell (``(n=…)`` when seeds differ), column best in bold."""
    variants = sorted({v for v, _ in cells})
    batches = sorted({b for _, b in cells})
    full = max((len(v) for v in cells.values()), default=0)
    best = {}
    for b in batches:
        means = {v: mean_std(cells[(v, b)])[0] for v in variants if (v, b) in cells}
        if means and higher_is_better is not None:
            best[b] = (max if higher_is_better else min)(means.values())
    lines = ["| variant \\ batch per GPU | " + " | ".join(str(b) for b in batches) + " |"]
    lines.append("|---|" + "---|" * len(batches))
    for v in variants:
        out = []
        for b in batches:
            if (v, b) not in cells:
                out.append("–")
                continue
            mean, std = mean_std(cells[(v, b)])
            text = fmt(mean, digits) if math.isnan(std) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"
            if len(cells[(v, b)]) < full:
                text += f" (n={len(cells[(v, b)])})"
            out.append(f"**{text}**" if len(variants) > 1 and mean == best.get(b) else text)
        lines.append(f"| {v} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def bn_markdown(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """BatchNorm variants: val mIoU by the statistics used at inference, per batch size (mean over seeds)."""
    cols = {c: aggregate(rows, c) for c, _ in BN_COLUMNS}
    keys = sorted(set().union(*[set(c) for c in cols.values()]))
    if not keys:
        return None
    lines = ["| variant | batch per GPU | " + " | ".join(t for _, t in BN_COLUMNS) + " |",
             "|---|---|" + "---|" * len(BN_COLUMNS)]  # fmt: skip
    for key in keys:
        values = [fmt(mean_std(cols[c][key])[0], 3) if key in cols[c] else "–" for c, _ in BN_COLUMNS]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def problems(sweep: Sweep) -> list[str]:
    """One line per failed or missing job."""
    lines = [f"failed: `{j.path}`: {j.error}" for j in sweep.failed]
    for params in sweep.missing:
        lines.append("missing: " + " ".join(f"{k}={v}" for k, v in params.items()))
    return lines


def to_markdown(sweep: Sweep, rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """``results.md``: counts, the mean ± std tables, the BatchNorm statistics table, the problems."""
    ok = sum(r["status"] == "ok" for r in rows)
    parts = [
        f"# {title}",
        f"{len(rows) + len(sweep.missing)} jobs: {ok} finished, {len(sweep.failed)} failed, "
        f"{len(sweep.missing)} missing. Cells are the mean ± std over seeds (the mean alone for one seed); "
        "the best of each column is in bold.",
    ]
    for column, heading, higher in TABLES:
        cells = aggregate(rows, column)
        if cells:
            digits = (3 if "miou" in column or "gap" in column else 2 if column.startswith("tiling") else
                      1 if column == "tiles_per_s" else 0)  # fmt: skip
            parts += [f"## {heading}", pivot_markdown(cells, higher, digits)]
    bn = bn_markdown(rows)
    if bn:
        parts += ["## BatchNorm at inference: val mIoU by the statistics used (mean over seeds)", bn]
    issues = problems(sweep)
    if issues:
        parts += ["## Failed and missing jobs", "\n".join(f"- {line}" for line in issues)]
    return "\n\n".join(parts) + "\n"
