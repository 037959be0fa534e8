"""Single date against the whole series on the eo-learn Slovenia patch (docs/time-series.md).

Trains U-Net/ResNet-18 (BatchNorm, batch 8, 2048 chips of 32 px per run, the norm-ablation budget) on:
each single date (seed 0, to find the best one), the best date with two more seeds, the five dates as
five unrelated scenes (data=eolearn_slovenia, geoseg's way before series), and all five dates as one
series by early fusion and by attention fusion (3 seeds each); prints a markdown table of val mIoU
(mean ± std) with the majority baseline. Run from the repo root:

    python scripts/series_slovenia.py --output outputs/series_slovenia.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COMMON = [
    "data.chips_per_epoch=512", "trainer.max_epochs=4", "data.batch_size=8", "trainer.tensorboard=false",
    "trainer.latest_link=null", "trainer.keep_checkpoints=none", "trainer.progress=false",
]  # fmt: skip
SEEDS = (0, 1, 2)


def train(name: str, overrides: list[str], seed: int, root: str) -> dict:
    """One ``geoseg train`` run (skipped when its summary exists); its summary.json."""
    run_dir = os.path.join(root, name, f"seed{seed}")
    summary = os.path.join(run_dir, "summary.json")
    if not os.path.exists(summary):
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "geoseg", "train", *overrides, *COMMON, f"seed={seed}",
               f"hydra.run.dir={run_dir}"]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with open(summary, encoding="utf-8") as fh:
        return json.load(fh)


def single_date(k: int) -> list[str]:
    return ["data=eolearn_slovenia", f"data.splits.train.images=s2_scene_{k}.tif",
            f"data.splits.val.images=s2_scene_{k}.tif"]  # fmt: skip


def row(label: str, runs: list[dict]) -> str:
    values = [r["best_miou"] for r in runs]
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return (
        f"| {label} | {len(values)} | {statistics.mean(values):.3f}{spread} | "
        + ", ".join(f"{v:.3f}" for v in values)
        + " |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="outputs/series_slovenia.md")
    parser.add_argument("--runs", default="outputs/series_slovenia", help="folder of the runs")
    args = parser.parse_args()
    singles = {k: train(f"date{k}", single_date(k), 0, args.runs) for k in range(5)}
    best = max(singles, key=lambda k: singles[k]["best_miou"])
    best_runs = [singles[best]] + [train(f"date{best}", single_date(best), s, args.runs) for s in SEEDS[1:]]
    separate = [train("separate", ["data=eolearn_slovenia"], s, args.runs) for s in SEEDS]
    series = ["data=eolearn_slovenia_series"]
    early = [train("early", [*series, "temporal=early"], s, args.runs) for s in SEEDS]
    attention = [train("attention", [*series, "temporal=attention"], s, args.runs) for s in SEEDS]
    lines = [
        "| input | seeds | val mIoU (mean ± std) | per seed |",
        "|---|---:|---:|---|",
        f"| majority class (baseline) | – | {early[0]['majority_baseline_miou']:.3f} | – |",
        *[row(f"date {k} alone", [singles[k]]) for k in range(5)],
        row(f"best single date ({best})", best_runs),
        row("5 dates as 5 separate scenes (each date alone per chip)", separate),
        row("5 dates, early fusion", early),
        row("5 dates, attention fusion", attention),
    ]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, args.output)
    print(text)


if __name__ == "__main__":
    main()
