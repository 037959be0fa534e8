"""Archive scale: `geoseg stats` wall and peak RSS, and train start-up, against the number of scenes.

Scenes come from scripts/archive_scenes.py (256-px 6-band uint16, 2 classes); the first N of them are
hard-linked into a set of their own for each N. Per N, in fresh processes:

- ``geoseg stats`` into an empty cache (scenes inspected, statistics computed): wall seconds, peak RSS;
- the first start-up: what `geoseg train` does before its first step (find and inspect the scenes,
  compute the statistics, the chip sampler's coarse masks) with an empty cache: wall seconds, peak RSS;
- the cached start-up: the same again, reading the scene index and statistics the first one left;
- ``chips/s``: the train loader over ``--chips`` random 64-px chips (0 workers, start-up excluded).

    python scripts/archive_scenes.py outputs/bench_data/archive 10000
    python scripts/bench_archive.py --counts 100 1000 10000 --output outputs/bench_archive.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_table import emit_table

CLASSES = [{"code": 0, "name": "background"}, {"code": 1, "name": "rare"}]


def make_set(source: Path, folder: Path, count: int) -> Path:
    """The first ``count`` scenes of ``source`` hard-linked under ``folder`` (own paths, no extra disk)."""
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"scene_{i:05d}.tif"
            if not (folder / kind / name).exists():
                os.link(source / kind / name, folder / kind / name)
    return folder


def data_overrides(folder: Path, cache: Path) -> list[str]:
    return [f"data.root={folder}", "data.demo=null", "data.splits.train.images=images/*.tif",
            'data.splits.train.labels="labels/{stem}.tif"', "data.splits.val=null",
            f"data.cache_dir={cache}", "data.chip_size=64",
            "data.classes=[{code: 0, name: background}, {code: 1, name: rare}]"]  # fmt: skip


def timed(command: list[str]) -> dict[str, float]:
    """Run ``command``; its wall seconds and peak RSS (MB), and the JSON it printed last, if any."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{stderr[-3000:]}")
    result = {"wall": wall, "rss_mb": usage.ru_maxrss / 1024}
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if lines:
        result.update(json.loads(lines[-1]))
    return result


def child_startup(folder: str, cache: str, chips: int) -> None:
    """In a fresh process: the start-up phases of `geoseg train`, then the loader's chips/s."""
    from geoseg.data.build import build_split, load_scenes, train_stats

    cfg = {"root": folder, "demo": None, "splits": {"train": {"images": "images/*.tif",
           "labels": "labels/{stem}.tif"}}, "classes": CLASSES, "ignore_index": 255, "chip_size": 64,
           "max_nodata_fraction": 0.5, "chips_per_epoch": chips, "batch_size": 16, "num_workers": 0,
           "persistent_workers": False, "stats_path": None, "cache_dir": cache}  # fmt: skip
    t0 = time.perf_counter()
    scenes = load_scenes(cfg, "train")
    t1 = time.perf_counter()
    stats = train_stats(cfg, progress=False, scenes=scenes)
    t2 = time.perf_counter()
    split = build_split(cfg, "train", stats, None, seed=0, scenes=scenes)
    t3 = time.perf_counter()
    n = sum(len(batch["image"]) for batch in split.loader)
    t4 = time.perf_counter()
    print(json.dumps({"inspect": t1 - t0, "stats_read": t2 - t1, "sampler": t3 - t2, "startup": t3 - t0,
                      "chips_per_s": n / (t4 - t3)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=Path("outputs/bench_data/archive"))
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--chips", type=int, default=512)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_startup(args.child[0], args.child[1], int(args.child[2]))
        return
    rows = []
    for count in args.counts:
        folder = make_set(args.source, args.source.parent / "archive_sets" / f"n{count}", count)
        fresh = [folder / "cache_stats", folder / "cache"]
        for cache in fresh:
            shutil.rmtree(cache, ignore_errors=True)
        stats = timed(["geoseg", "stats", *data_overrides(folder, fresh[0]), "progress=false",
                       f"hydra.run.dir={folder}/log"])  # fmt: skip
        child = [sys.executable, __file__, "--child", str(folder), str(fresh[1]), str(args.chips)]
        first, cached = timed(child), timed(child)  # an empty cache, then the one the first run left
        rows.append(f"| {count:,} | {stats['wall']:.1f} | {stats['rss_mb']:.0f} | {first['inspect']:.1f} | "
                    f"{first['stats_read']:.1f} | {first['sampler']:.1f} | {first['rss_mb']:.0f} | "
                    f"{cached['startup']:.1f} | {cached['chips_per_s']:.0f} |")  # fmt: skip
        print(rows[-1], file=sys.stderr)
    header = ("| scenes | `geoseg stats` s | its peak RSS MB | first start-up: index s | + stats s | "
              "+ sampler masks s | its peak RSS MB | cached start-up s | chips/s |")  # fmt: skip
    notes = ["256-px 6-band uint16 scenes, 64-px chips, 0 workers"]
    emit_table(notes, header, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|", rows, args.output)


if __name__ == "__main__":
    main()
