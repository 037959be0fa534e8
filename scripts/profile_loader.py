"""Run geoseg's training chip loader over one scene, for a profiler; and summarise py-spy's output.

Reads ``--chips`` random chips (as ``geoseg train`` draws them) of one image (and label) through
the DataLoader that training builds, then prints chips/s. Under py-spy it shows where the loader's
time goes, line by line:

    py-spy record --format raw --rate 250 -o outputs/profile_loader.txt -- \\
        python scripts/profile_loader.py outputs/bench_data/synthetic_4096_tiled.tif
    python scripts/profile_loader.py --summarise outputs/profile_loader.txt

The scene's label defaults to ``<stem>_label.tif`` beside it when that exists (the files that
``scripts/bench_vs_torchgeo.py`` writes under ``outputs/bench_data``).
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from pathlib import Path

from rasterio.env import set_gdal_config

from geoseg.data.build import random_sampler
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.loader import make_loader
from geoseg.data.scenes import inspect_scene


def run_loader(args: argparse.Namespace) -> None:
    os.environ["GDAL_CACHEMAX"] = str(args.cache_mb)
    set_gdal_config("GDAL_CACHEMAX", args.cache_mb * 2**20)
    label = args.label or args.image.with_name(args.image.stem + "_label.tif")
    label = str(label) if label.exists() else None
    codes = list(range(args.classes))
    scene = inspect_scene(str(args.image), label, class_codes=codes, unknown_labels="ignore")
    cmap = ClassMap(codes)
    cfg = {"chip_size": args.chip, "max_nodata_fraction": 1.0, "chips_per_epoch": args.chips,
           "align_chips": args.align, "batch_size": args.batch, "num_workers": args.workers}  # fmt: skip
    dataset = ChipDataset([scene], args.chip, cmap, fill=[0.0] * len(scene.bands))
    loader = make_loader(dataset, random_sampler([scene], cfg, cmap, 0, 0, 1), cfg)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["image"])
    seconds = time.perf_counter() - start
    print(f"{n} chips in {seconds:.2f} s: {n / seconds:.1f} chips/s")


def summarise(path: Path, top: int) -> None:
    """Share of samples per innermost Python line (self time), from py-spy's ``--format raw``."""
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        leaves[stack.split(";")[-1]] += int(count)
        total += int(count)
    print(f"{total} samples in {path}")
    print("| share | innermost Python frame |\n|---:|---|")
    for frame, count in leaves.most_common(top):
        print(f"| {100 * count / total:.1f}% | `{frame.strip()}` |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", type=Path, nargs="?")
    parser.add_argument("--label", type=Path, default=None)
    parser.add_argument("--classes", type=int, default=4, help="label codes 0..N-1")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--chips", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--cache-mb", type=int, default=64, help="GDAL_CACHEMAX")
    parser.add_argument("--align", action="store_true", help="data.align_chips=true")
    parser.add_argument("--summarise", type=Path, default=None, help="a py-spy raw file to summarise")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    if args.summarise is not None:
        summarise(args.summarise, args.top)
    elif args.image is None:
        parser.error("give an image to read, or --summarise FILE")
    else:
        run_loader(args)


if __name__ == "__main__":
    main()
