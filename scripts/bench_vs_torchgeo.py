"""Chips/s of geoseg's chip loader against TorchGeo and against plain rasterio windowed reads.

The same files, chip size, batch size and worker counts for every reader, in one run:

- ``plain``: rasterio, both files opened once, ``read(window=...)`` of the image (all bands) and
  the label per chip, over geoseg's chips; single process. The arrays are dropped at once, so each
  read lands in the same cache-hot memory: the ceiling for one core.
- ``plain + stack``: the same reads kept and ``np.stack``-ed into batches of ``--batch``, the least
  a loader must do (what a bare ``Dataset`` + ``default_collate`` does, without any masking).
- ``geoseg``: ``ChipDataset`` + ``RandomChipSampler`` / ``GridChipSampler`` through the DataLoader
  that ``geoseg train`` builds (``make_loader``): image, label, nodata mask, raw dtype.
- ``geoseg aligned``: the same with ``data.align_chips=true`` (random chips on the file's block grid).
- ``torchgeo``: ``RasterDataset`` (image) ``&`` ``RasterDataset`` (label, ``is_image=False``) with
  ``RandomGeoSampler`` / ``GridGeoSampler`` in pixel units and ``stack_samples``.

Scenes: the real ones in ``../shared/data`` (Sen1Floods11 S2 with its label, the Landsat 8 and NAIP
scenes without labels) and a generated 13-band 4096x4096 uint16 scene with a uint8 label, written
once as 256-px tiles + deflate and once as deflate strips (cached under ``--scratch``).

Each number is the median of ``--repeats`` passes of ``--chips`` chips (grid passes repeat the grid
to that count); the first batch of each worker (worker start-up, opening files) is not timed.
GDAL_CACHEMAX is ``--cache-mb`` for every reader: the real scenes fit in it (after the first pass
every read is a copy out of the cache), the 4096x4096 scenes (436 MB decoded) do not.

TorchGeo is optional: ``pip install -e ".[bench]"``. Without it the script says so and exits 0.

    python scripts/bench_vs_torchgeo.py --output outputs/bench_vs_torchgeo.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.env import set_gdal_config
from rasterio.windows import Window
from torch.utils.data import DataLoader
from tqdm import tqdm

from geoseg.data.build import random_sampler
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.loader import make_loader
from geoseg.data.samplers import GridChipSampler
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.io import atomic_write_text
from synthetic_scenes import write_synthetic

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass(frozen=True)
class BenchScene:
    name: str
    image: Path
    label: Path | None
    codes: tuple[int, ...] = (0, 1, 2, 3)
    label_nodata: float | None = None


def bench_scenes(scratch: Path, size: int) -> list[BenchScene]:
    """The real scenes that exist under ../shared/data, plus the generated ones (written once)."""
    scenes = []
    real = [
        ("sen1floods11 S2 512x512, 13-band int16", "sen1floods11/Spain_7370579_S2Hand.tif",
         "sen1floods11/Spain_7370579_LabelHand.tif", (0, 1), -1),
        ("landsat8 2041x1860, 3-band uint16", "landsat8_scene/LC08_L1TP_224078_20200518_20200518_01_RT.TIF",
         None, (0, 1), None),
        ("naip 934x723, 4-band uint8", "naip_scene/m_4709963_se_14_1_20200831.tif", None, (0, 1), None),
    ]  # fmt: skip
    for name, image, label, codes, nodata in real:
        if (SHARED / image).exists():
            scenes.append(BenchScene(name, SHARED / image, label and SHARED / label, codes, nodata))
        else:
            print(f"# skipped {name}: {SHARED / image} is missing", file=sys.stderr)
    scratch.mkdir(parents=True, exist_ok=True)
    for tiled in (True, False):
        kind = "tiled 256 deflate" if tiled else "striped deflate"
        image = scratch / f"synthetic_{size}_{'tiled' if tiled else 'striped'}.tif"
        label = image.with_name(image.stem + "_label.tif")
        write_synthetic(image, label, size, "tiled" if tiled else "striped")
        scenes.append(BenchScene(f"synthetic {size}x{size}, 13-band uint16, {kind}", image, label))
    return scenes


def timed(batches: Iterable[dict], skip: int = 1) -> float:
    """Chips/s over an iterable of batches; the first ``skip`` batches (worker start-up) are not timed."""
    it = iter(batches)
    for _ in range(skip):
        next(it)
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch["image"])
    return n / (time.perf_counter() - start)


def geoseg_loader(scene: Scene, b: BenchScene, args: argparse.Namespace, grid: bool, workers: int,
                  align: bool = False) -> tuple[DataLoader, list]:  # fmt: skip
    cmap = ClassMap(list(b.codes))
    cfg = {"chip_size": args.chip, "max_nodata_fraction": 1.0, "chips_per_epoch": args.chips,
           "align_chips": align, "batch_size": args.batch, "num_workers": workers,
           "persistent_workers": False}  # fmt: skip
    dataset = ChipDataset([scene], args.chip, cmap, fill=[0.0] * len(scene.bands))
    if grid:
        chips = list(GridChipSampler([scene.bounds], args.chip))
        chips = (chips * (args.chips // len(chips) + 1))[: args.chips]
    else:
        chips = list(random_sampler([scene], cfg, cmap, seed=0, rank=0, world_size=1))
    return make_loader(dataset, chips, cfg), chips


def plain_rate(b: BenchScene, chips: list, size: int, batch: int = 0) -> float:
    """Chips/s of bare windowed reads; with ``batch`` the chips are also stacked into batches."""
    with rasterio.open(b.image) as img, rasterio.open(b.label) if b.label else img as lab:
        start = time.perf_counter()
        images, labels = [], []
        for chip in chips:
            window = Window(chip.col, chip.row, size, size)
            images.append(img.read(window=window))
            if b.label:
                labels.append(lab.read(1, window=window))
            if len(images) == batch or not batch:
                if batch:
                    np.stack(images)
                    if labels:
                        np.stack(labels)
                images, labels = [], []
        return len(chips) / (time.perf_counter() - start)


def torchgeo_loader(b: BenchScene, args: argparse.Namespace, grid: bool, workers: int) -> DataLoader:
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    def dataset(path: Path, is_image: bool) -> RasterDataset:
        cls = type("BenchRaster", (RasterDataset,), {"filename_glob": path.name, "is_image": is_image})
        return cls(paths=[str(path)])

    ds = dataset(b.image, True)
    if b.label is not None:
        ds = ds & dataset(b.label, False)
    if grid:
        cells = list(GridGeoSampler(ds, size=args.chip, stride=args.chip))
        sampler = (cells * (args.chips // len(cells) + 1))[: args.chips]
    else:
        seeded = torch.Generator().manual_seed(0)
        sampler = RandomGeoSampler(ds, size=args.chip, length=args.chips, generator=seeded)
    extra = {"prefetch_factor": 2} if workers else {}
    return DataLoader(ds, batch_size=args.batch, sampler=sampler, num_workers=workers,
                      collate_fn=stack_samples, **extra)  # fmt: skip


def measure(scene: Scene, b: BenchScene, args: argparse.Namespace, grid: bool, workers: int) -> dict:
    """Median chips/s of each reader for one scene, sampler and worker count."""
    skip = max(1, workers)
    loaders = {"geoseg": geoseg_loader(scene, b, args, grid, workers)[0]}
    if not grid:
        loaders["aligned"] = geoseg_loader(scene, b, args, grid, workers, align=True)[0]
    loaders["torchgeo"] = torchgeo_loader(b, args, grid, workers)
    rate = {name: statistics.median(timed(loader, skip) for _ in range(args.repeats))
            for name, loader in loaders.items()}  # fmt: skip
    if workers == 0:
        chips = geoseg_loader(scene, b, args, grid, workers)[1]
        rate["plain"] = statistics.median(plain_rate(b, chips, args.chip) for _ in range(args.repeats))
        rate["batched"] = statistics.median(
            plain_rate(b, chips, args.chip, args.batch) for _ in range(args.repeats)
        )
    return rate


def table_row(name: str, kind: str, workers: int, r: dict) -> str:
    cell = {k: f"{v:.1f}" for k, v in r.items()}
    vs_plain = f"{r['geoseg'] / r['plain']:.2f}x" if "plain" in r else "–"
    vs_batched = f"{r['geoseg'] / r['batched']:.2f}x" if "batched" in r else "–"
    return (
        f"| {name} | {kind} | {workers} | {cell.get('plain', '–')} | {cell.get('batched', '–')} | "
        f"{cell['geoseg']} | {cell.get('aligned', '–')} | {cell['torchgeo']} | "
        f"{r['geoseg'] / r['torchgeo']:.1f}x | {vs_plain} | {vs_batched} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--chips", type=int, default=512, help="chips per pass")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=4096, help="side of the generated scenes")
    parser.add_argument("--cache-mb", type=int, default=64, help="GDAL_CACHEMAX for every reader")
    parser.add_argument("--scratch", type=Path, default=Path("outputs/bench_data"))
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    try:
        import torchgeo
    except ImportError:
        print('bench_vs_torchgeo: TorchGeo is not installed; run `pip install -e ".[bench]"` first.')
        return
    os.environ["GDAL_CACHEMAX"] = str(args.cache_mb)  # the workers (both libraries) read the environment
    set_gdal_config("GDAL_CACHEMAX", args.cache_mb * 2**20)
    torch.set_num_threads(1)
    rows = []
    jobs = [(b, grid) for b in bench_scenes(args.scratch, args.size) for grid in (False, True)]
    for b, grid in tqdm(jobs, desc="scenes", file=sys.stderr):
        scene = inspect_scene(str(b.image), b.label and str(b.label), class_codes=b.codes,
                              label_nodata=b.label_nodata, unknown_labels="ignore")  # fmt: skip
        for workers in args.workers:  # each row also to stderr as it is done
            rows.append(table_row(b.name, "grid" if grid else "random", workers,
                                  measure(scene, b, args, grid, workers)))  # fmt: skip
            tqdm.write(rows[-1], file=sys.stderr)
    versions = (
        f"torch {torch.__version__} | torchgeo {torchgeo.__version__} | rasterio {rasterio.__version__}"
    )
    lines = [
        f"# {datetime.date.today()} | {platform.node()} | {os.cpu_count()} CPUs | {versions} | "
        f"GDAL {rasterio.__gdal_version__}",
        f"# python {shlex.join(sys.argv)}  (chip {args.chip}, batch {args.batch}, {args.chips} chips/pass, "
        f"median of {args.repeats}, GDAL_CACHEMAX {args.cache_mb} MB)",
        "| scene | chips | workers | plain read | plain read + stack | geoseg | geoseg aligned | TorchGeo "
        "| geoseg / TorchGeo | geoseg / plain | geoseg / plain + stack |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text)


if __name__ == "__main__":
    main()
