"""Area against class-balanced chips on real data, same budget: delivered class mix and val IoU.

Trains the same model on the SpaceNet buildings chip (``data=spacenet_vector``: 4.2% buildings,
labels read from the GeoJSON) once per ``data.sampling`` mode and seed, and reads each run's
``summary.json``: the building fraction of the chips the sampler drew and the val building IoU.

    python scripts/bench_sampling.py --seeds 0 1 --output outputs/bench_sampling.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from bench_table import emit_table


def train(mode: str, seed: int, run_dir: Path, extra: list[str]) -> dict:
    args = ["geoseg", "train", "data=spacenet_vector", f"data.sampling={mode}", f"seed={seed}",
            f"hydra.run.dir={run_dir}", *extra]  # fmt: skip
    if not (run_dir / "summary.json").exists():
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{shlex.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", type=Path, default=Path("outputs/bench_sampling"))
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="more geoseg train overrides (the same for both modes)")
    args = parser.parse_args()
    rows = []
    for mode in ("area", "class_balanced"):
        for seed in args.seeds:
            tag = "".join(f"_{o}" for o in args.overrides if mode != "area" or "class_power" not in o)
            run_dir = args.runs / f"{mode}_seed{seed}{tag}".replace("/", "-").replace("=", "-")
            summary = train(mode, seed, run_dir, args.overrides)
            mix = summary["sampling"]["delivered_class_fraction"]
            val = summary["val"]
            rows.append(f"| {mode} | {seed} | {mix['building']:.3f} | {val['iou']['building']:.3f} | "
                        f"{val['miou']:.3f} |")  # fmt: skip
            print(rows[-1], file=sys.stderr)
    header = "| data.sampling | seed | building fraction of the drawn chips | val building IoU | val mIoU |"
    notes = [f"overrides for both modes: {shlex.join(args.overrides) or 'none'}"]
    emit_table(notes, header, "|---|---:|---:|---:|---:|", rows, args.output)


if __name__ == "__main__":
    main()
