"""Chips/s of a 5-date series against one date of it: does time cost more than its reads?

Five dates of one 13-band uint16 Sentinel-2-like scene (one GeoTIFF per date, tiled 256, deflate) and a
uint8 label on the same grid, optionally each date's SCL-like cloud mask at 20 m. Read through geoseg's
ChipDataset and a DataLoader with 0 and 2 workers, the same random chips for every layout, median of
``--repeats`` runs interleaved:

- ``1 date``: date 0 as a single-date scene (the baseline);
- ``5 dates``: the series, every date per chip (T = 5), chips of 5 x (13 + 1) channels;
- ``5 dates + masks``: the same with each date's SCL mask read and applied (data.series.mask);
- ``3 of 5 (clearest)``: every date read, the 3 clearest kept (data.series.select=clearest, count 3).

The goal (issue 38) is a series rate of at least 1/T of the one-date rate. ``--cache`` sets GDAL's
block cache (default 1024 MB: decoded blocks stay cached, so geoseg's own work is what differs; 8 MB
makes most reads decode their blocks again).

    python scripts/bench_series.py
    python scripts/bench_series.py --size 2048 --chips 400 --cache 8
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from bench_io import dataset_read, set_cache  # scripts/ is on sys.path when run from the repo root
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.data.series import SeriesRead
from geoseg.data.series_scene import inspect_dates

DATES = 5
BANDS = 13
PROFILE = {"driver": "GTiff", "crs": "EPSG:32633", "tiled": True, "blockxsize": 256, "blockysize": 256,
           "compress": "deflate"}  # fmt: skip
SCL_INVALID = (0, 1, 3, 8, 9, 10)


def write_scenes(folder: Path, size: int) -> tuple[list[Path], list[Path], Path]:
    """Five dates, their SCL masks and a label; returns (date files, mask files, label)."""
    rng = np.random.default_rng(0)
    t10, t20 = from_origin(500_000, 5_000_000, 10, 10), from_origin(500_000, 5_000_000, 20, 20)
    dates, masks = [], []
    for k in range(DATES):
        data = rng.integers(200, 3000, (BANDS, 1, 1)) + rng.normal(0, 150, (BANDS, size, size))
        path = folder / f"S2_2024060{k + 1}.tif"
        with rasterio.open(path, "w", width=size, height=size, count=BANDS, transform=t10, dtype="uint16",
                           nodata=0, interleave="pixel", **PROFILE) as dst:  # fmt: skip
            dst.write(data.clip(1, 60000).astype(np.uint16))
        scl = np.where(rng.random((size // 2, size // 2)) < 0.2 * k / DATES, 9, 4).astype(np.uint8)
        mask = folder / f"S2_2024060{k + 1}_SCL.tif"
        with rasterio.open(mask, "w", width=size // 2, height=size // 2, count=1, transform=t20,
                           dtype="uint8", **PROFILE) as dst:  # fmt: skip
            dst.write(scl, 1)
        dates.append(path)
        masks.append(mask)
    label = folder / "label.tif"
    with rasterio.open(label, "w", width=size, height=size, count=1, transform=t10, dtype="uint8",
                       nodata=255, **PROFILE) as dst:  # fmt: skip
        dst.write(rng.integers(0, 4, size=(size, size), dtype=np.uint8), 1)
    return dates, masks, label


def series_scene(dates: list[Path], masks: list[Path] | None, label: Path, chip: int) -> Scene:
    """The series scene of ``dates`` (with ``masks``) as geoseg's loader builds it."""
    import dataclasses

    first = inspect_scene(str(dates[0]), str(label), class_codes=[0, 1, 2, 3], chip_size=chip)
    found = [(p.stem[3:], None, (str(p),), str(m) if masks else None)
             for p, m in zip(dates, masks or dates, strict=True)]  # fmt: skip
    parsed, dtype = inspect_dates(found, None, None, "finest", first.grid, first.band_names, 1,
                                  SCL_INVALID if masks else ())  # fmt: skip
    return dataclasses.replace(first, dates=parsed, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="scene side in px (10 m grid)")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--chips", type=int, default=240, help="chips per measurement")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=int, default=1024, help="GDAL_CACHEMAX in MB")
    args = parser.parse_args()
    torch.set_num_threads(1)
    set_cache(args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        dates, masks, label = write_scenes(Path(tmp), args.size)
        classes, fill = ClassMap([0, 1, 2, 3]), [1500.0] * BANDS
        one = inspect_scene(str(dates[0]), str(label), class_codes=[0, 1, 2, 3], chip_size=args.chip)
        plain, masked = (
            series_scene(dates, None, label, args.chip),
            series_scene(dates, masks, label, args.chip),
        )
        datasets = {
            "1 date": ChipDataset([one], args.chip, classes, fill),
            "5 dates": ChipDataset([plain], args.chip, classes, fill, series=SeriesRead(DATES)),
            "5 dates + masks": ChipDataset([masked], args.chip, classes, fill, series=SeriesRead(DATES)),
            "3 of 5 (clearest)": ChipDataset(
                [masked], args.chip, classes, fill, series=SeriesRead(3, "clearest")
            ),
        }
        grid = np.arange(0, args.size - args.chip + 1, 8)
        origins = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        sampler = RandomChipSampler([origins], [np.ones(len(origins))], args.chips, seed=0)
        rates: dict[tuple[str, int], list[float]] = {}
        for workers in (0, 2):
            for _ in range(args.repeats):
                for name, ds in datasets.items():
                    rates.setdefault((name, workers), []).append(
                        dataset_read(ds, sampler, workers, args.batch)
                    )
    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__} | "
        f"rasterio {rasterio.__version__} | GDAL {rasterio.__gdal_version__} | {time.strftime('%Y-%m-%d')}"
    )
    print(f"# {args.size}² px, {DATES} dates x {BANDS}-band uint16 (tiled 256, deflate) + uint8 label, "
          f"SCL masks at 20 m; random {args.chip}-px chips, batch {args.batch}, {args.chips} chips x "
          f"{args.repeats} repeats (median), GDAL_CACHEMAX {args.cache} MB")  # fmt: skip
    print("| layout | workers | chips/s | × one date | dates read × that (goal ≥ 1) |")
    print("|---|---:|---:|---:|---:|")
    for workers in (0, 2):
        base = float(np.median(rates[("1 date", workers)]))
        for name, ds in datasets.items():
            rate = float(np.median(rates[(name, workers)]))
            t = ds.series.dates if ds.series else 1
            read = len(ds.scenes[0].dates) or 1
            goal = "–" if ds.series is None else f"{rate / base * read:.2f}"
            print(f"| {name} (T={t}) | {workers} | {rate:.1f} | {rate / base:.2f}× | {goal} |")


if __name__ == "__main__":
    main()
