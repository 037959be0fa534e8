"""PNG plots of a sweep: val mIoU against per-GPU batch size, throughput and memory per variant, and
BatchNorm's val mIoU by the statistics it normalises with.

Figures are built with matplotlib's object API (no pyplot state, no display needed) and written
atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from geoseg.io import atomic_write
from geoseg.output_policy import PNG_METADATA
from geoseg.report.tables import BN_COLUMNS, aggregate, mean_std, number


def save(fig: Figure, path: str) -> None:
    """Write ``fig`` as a PNG at ``path`` (temp name, then rename)."""

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata=PNG_METADATA)

    atomic_write(path, write, "report plot")


def series(
    cells: Mapping[tuple[str, int], list[float]], variant: str
) -> tuple[list[int], list[float], list[float]]:
    """Batch sizes, means and stds (0 for one seed) of one variant's cells."""
    batches = sorted(b for v, b in cells if v == variant)
    stats = [mean_std(cells[(variant, b)]) for b in batches]
    return batches, [m for m, _ in stats], [0.0 if math.isnan(s) else s for _, s in stats]


def batch_axis(ax: Any, batches: Sequence[int]) -> None:
    """A log2 x axis labelled with the batch sizes themselves."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batches), [str(b) for b in batches])
    ax.minorticks_off()
    ax.set_xlabel("images per GPU (per-GPU batch size)")


def finish_batch_plot(
    fig: Figure, ax: Any, batches: Sequence[int], ylabel: str, title: str, path: str
) -> None:
    """Batch-size x axis, labels, grid and legend; then save the figure to ``path``."""
    batch_axis(ax, batches)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def majority_baseline(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The val mIoU of predicting the majority class everywhere (the same val set for every job)."""
    values = [number(r.get("majority_baseline_miou")) for r in rows]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def zoom_limits(lows: Sequence[float], highs: Sequence[float], floor: float = 0.02) -> tuple[float, float]:
    """Y limits that frame every error bar (``lows``/``highs``) with 15% margins, at least ``floor``
    tall, inside 0-1: the zoomed panel where gaps of a hundredth are visible."""
    lo, hi = min(lows), max(highs)
    pad = max(0.15 * (hi - lo), (floor - (hi - lo)) / 2, 1e-3)
    return max(0.0, lo - pad), min(1.0, hi + pad)


def plot_miou_vs_batch(rows: Sequence[Mapping[str, Any]], path: str, title: str) -> bool:
    """Val mIoU vs per-GPU batch, one line per variant with ± std error bars: on a 0-1 axis with the
    majority-class baseline dashed (so gaps are in proportion), and beside it the same lines zoomed to
    their range, each variant nudged sideways so error bars do not hide each other; False when nothing
    to plot."""
    cells = aggregate(rows, "val_miou")
    if not cells:
        return False
    fig = Figure(figsize=(11.0, 4.2))
    full, zoom = fig.subplots(1, 2)
    variants = sorted({v for v, _ in cells})
    lows, highs = [], []
    for i, variant in enumerate(variants):
        xs, ys, es = series(cells, variant)
        nudge = 2 ** (0.05 * (i - (len(variants) - 1) / 2))  # on the log2 batch axis
        full.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=variant)
        zoom.errorbar([x * nudge for x in xs], ys, yerr=es, marker="o", capsize=3, label=variant)
        lows += [y - e for y, e in zip(ys, es, strict=True)]
        highs += [y + e for y, e in zip(ys, es, strict=True)]
    baseline = majority_baseline(rows)
    if baseline is not None:
        full.axhline(baseline, color="grey", linestyle="--", linewidth=1,
                     label=f"majority class everywhere ({baseline:.3f})")  # fmt: skip
    full.set_ylim(0, 1)
    zoom.set_ylim(*zoom_limits(lows, highs))
    batches = sorted({b for _, b in cells})
    batch_axis(zoom, batches)
    zoom.set_title("zoomed to the variants (mean ± std over seeds)", fontsize=9)
    zoom.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)  # over both panels: a long title never runs into the zoomed one's
    finish_batch_plot(fig, full, batches, "val mIoU (mean ± std over seeds)", "0-1 axis", path)
    return True


def plot_throughput_memory(rows: Sequence[Mapping[str, Any]], path: str, title: str) -> bool:
    """Two panels: training tiles/s and peak memory per variant, one bar per batch size."""
    speed, memory = aggregate(rows, "tiles_per_s"), aggregate(rows, "peak_memory_mb")
    if not speed and not memory:
        return False
    variants = sorted({v for v, _ in speed} | {v for v, _ in memory})
    batches = sorted({b for _, b in speed} | {b for _, b in memory})
    fig = Figure(figsize=(9.6, 3.8))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(batches))
    for ax, cells, label in ((axes[0], speed, "training tiles/s"), (axes[1], memory, "peak memory (MB)")):
        for k, b in enumerate(batches):
            xs = [i + (k - (len(batches) - 1) / 2) * width for i, v in enumerate(variants) if (v, b) in cells]
            ys = [mean_std(cells[(v, b)])[0] for v in variants if (v, b) in cells]
            ax.bar(xs, ys, width, label=f"batch {b}")
        ax.set_xticks(range(len(variants)), variants, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: never over a bar
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(batches), fontsize=8,
               frameon=False)  # fmt: skip
    fig.suptitle(title, fontsize=10)
    save(fig, path)
    return True


def plot_bn_statistics(rows: Sequence[Mapping[str, Any]], path: str, title: str) -> bool:
    """BatchNorm variants: val mIoU with running, batch and recalibrated statistics vs per-GPU batch."""
    cols = {c: aggregate(rows, c) for c, _ in BN_COLUMNS}
    variants = sorted({v for cells in cols.values() for v, _ in cells})
    if not variants:
        return False
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    styles = dict(zip([c for c, _ in BN_COLUMNS], ["-o", "--s", ":^"], strict=True))
    for variant in variants:
        for column, name in BN_COLUMNS:
            xs, ys, es = series(cols[column], variant)
            if xs:
                label = name if len(variants) == 1 else f"{variant}: {name}"
                ax.errorbar(xs, ys, yerr=es, fmt=styles[column], capsize=3, label=label)
    finish_batch_plot(
        fig, ax, sorted({b for cells in cols.values() for _, b in cells}), "val mIoU", title, path
    )
    return True
