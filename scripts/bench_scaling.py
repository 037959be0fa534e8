"""How geoseg's data costs grow with scene count and scene size: start-up and chips/s.

Two series of generated 13-band uint16 scenes with 4-class labels (COGs: 512-px tiles, deflate,
overviews; cached under ``outputs/bench_data/scaling``):

- scene count: ``--counts`` scenes of ``--count-size`` px (the same total pixels grow with the count);
- scene size: one scene of each of ``--sizes`` px.

For each set, the phases ``geoseg train`` runs before its first step, timed one by one:
``inspect`` (open each scene, check CRS, bands and every label value), ``stats`` (band statistics,
computed: no cache) and ``sampler`` (the coarse validity mask that weights random chips); then the
train loader's chips/s over ``--chips`` random chips at ``--workers`` workers (start-up excluded).

    python scripts/bench_scaling.py --output outputs/bench_scaling.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from geoseg.data.build import build_split, load_scenes
from geoseg.data.stats import compute_stats
from geoseg.io import atomic_write_text
from synthetic_scenes import write_synthetic

ROOT = Path("outputs/bench_data/scaling")
CLASSES = [{"code": c, "name": f"c{c}"} for c in range(4)]


def make_set(name: str, count: int, size: int) -> Path:
    """``count`` COG scenes of ``size`` px (and labels) in a folder of their own; written once."""
    folder = ROOT / name
    base = ROOT / f"cog_{size}"
    write_synthetic(base / "image.tif", base / "label.tif", size, "cog")
    for i in range(count):  # hard links: distinct paths (own handles and cache keys), no extra disk
        for kind, src in (("images", base / "image.tif"), ("labels", base / "label.tif")):
            dst = folder / kind / f"scene_{i:03d}.tif"
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
    return folder


def measure(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    cfg = {
        "root": str(folder), "demo": None,
        "splits": {"train": {"images": "images/*.tif", "labels": "labels/{stem}.tif"}},
        "classes": CLASSES, "ignore_index": 255, "chip_size": args.chip, "max_nodata_fraction": 0.5,
        "chips_per_epoch": args.chips, "batch_size": args.batch, "num_workers": args.workers,
        "persistent_workers": False, "stats_path": str(folder / "stats.json"),
    }  # fmt: skip
    out: dict[str, float] = {}
    t = time.perf_counter()
    scenes = load_scenes(cfg, "train")
    out["inspect"] = time.perf_counter() - t
    t = time.perf_counter()
    stats = compute_stats(scenes, progress=False)
    out["stats"] = time.perf_counter() - t
    t = time.perf_counter()
    split = build_split(cfg, "train", stats, None, seed=0, scenes=scenes)
    out["sampler"] = time.perf_counter() - t
    it = iter(split.loader)
    for _ in range(max(1, args.workers)):
        next(it)
    t, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch["image"])
    out["chips/s"] = n / (time.perf_counter() - t)
    out["megapixels"] = sum(s.height * s.width for s in scenes) / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--count-size", type=int, default=1024)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--chips", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    sets = [(f"{c} x {args.count_size}²", make_set(f"count_{c}", c, args.count_size)) for c in args.counts]
    sets += [(f"1 x {s}²", make_set(f"size_{s}", 1, s)) for s in args.sizes]
    for label, folder in sets:
        r = measure(folder, args)
        rows.append(
            f"| {label} | {r['megapixels']:.0f} | {r['inspect']:.2f} | {r['stats']:.2f} | "
            f"{r['sampler']:.2f} | {r['chips/s']:.1f} |"
        )
        print(rows[-1], file=sys.stderr)
    text = "\n".join([
        f"# {datetime.date.today()} | {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__}",
        f"# python {shlex.join(sys.argv)}  (13-band uint16 COGs, chip {args.chip}, batch {args.batch}, "
        f"{args.workers} workers)",
        "| scenes | megapixels | inspect s | stats s | sampler s | loader chips/s |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]) + "\n"  # fmt: skip
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text)


if __name__ == "__main__":
    main()
