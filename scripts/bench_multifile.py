"""Chips/s of a scene whose bands are in several files, against the same bands pre-stacked in one file.

Three layouts of the same 6-band uint16 scene (a label on the same grid), in one run:

- ``prestacked``: one 6-band GeoTIFF, tiled 256, deflate, pixel-interleaved (the baseline);
- ``6 files``: six single-band GeoTIFFs, each tiled 256 + deflate (Landsat / per-band COG style),
  read with ``data.files`` and a ``{file}`` pattern, every file on the reference grid;
- ``10 m + 20 m``: four 10 m single-band files plus two 20 m ones at half the size (Sentinel-2 style),
  resampled bilinearly per chip window onto the 10 m grid.

Each is read through geoseg's ChipDataset and a DataLoader with 0 and 2 workers, the same random
256-px chips for all, median of ``--repeats`` runs interleaved across layouts, in two regimes:
``cold`` (GDAL_CACHEMAX 8 MB, far below the 48 MB of pixels, so most reads decompress their blocks)
and ``warm`` (1 GB: every block stays cached, so only geoseg's own work differs).

    python scripts/bench_multifile.py
    python scripts/bench_multifile.py --size 4096 --chips 600
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
from geoseg.data.band_files import parse_files
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scene_paths import expand_pattern
from geoseg.data.scenes import inspect_scene

BANDS = ["B2", "B3", "B4", "B8", "B11", "B12"]
COARSE = {"B11", "B12"}  # 20 m in the mixed layout
PROFILE = {"driver": "GTiff", "crs": "EPSG:32633", "tiled": True, "blockxsize": 256, "blockysize": 256,
           "compress": "deflate", "dtype": "uint16", "nodata": 0}  # fmt: skip


def write_layouts(folder: Path, size: int) -> dict[str, tuple[list[str], list[str] | None]]:
    """Write the three layouts and a label; returns {layout: (image files, data.files)} and the label."""
    rng = np.random.default_rng(0)
    data = rng.integers(200, 3000, size=(len(BANDS), 1, 1)) + rng.normal(0, 150, (len(BANDS), size, size))
    data = data.clip(1, 60000).astype(np.uint16)
    t10 = from_origin(500_000, 5_000_000, 10, 10)
    t20 = from_origin(500_000, 5_000_000, 20, 20)
    with rasterio.open(folder / "stacked.tif", "w", width=size, height=size, count=len(BANDS), transform=t10,
                       interleave="pixel", **PROFILE) as dst:  # fmt: skip
        dst.write(data)
    for layout in ("per_band", "mixed"):
        (folder / layout).mkdir()
        for i, band in enumerate(BANDS):
            coarse = layout == "mixed" and band in COARSE
            arr = data[i, ::2, ::2] if coarse else data[i]
            path = folder / layout / f"T33_{band}.tif"
            with rasterio.open(path, "w", width=arr.shape[1], height=arr.shape[0], count=1,
                               transform=t20 if coarse else t10, **PROFILE) as dst:  # fmt: skip
                dst.write(arr, 1)
    label = folder / "label.tif"
    with rasterio.open(label, "w", width=size, height=size, count=1, transform=t10,
                       **{**PROFILE, "dtype": "uint8", "nodata": 255}) as dst:  # fmt: skip
        dst.write(rng.integers(0, 4, size=(size, size), dtype=np.uint8), 1)
    return {"prestacked": ([str(folder / "stacked.tif")], None),
            "6 files": ([str(folder / "per_band" / "T33_{file}.tif")], BANDS),
            "10 m + 20 m": ([str(folder / "mixed" / "T33_{file}.tif")], BANDS)}  # fmt: skip


def dataset_for(spec: tuple[list[str], list[str] | None], label: Path, chip: int) -> ChipDataset:
    pattern, names = spec
    files = parse_files(names)
    images = expand_pattern(pattern[0], files, "bench")[0] if files else pattern[0]
    scene = inspect_scene(images, str(label), class_codes=[0, 1, 2, 3], chip_size=chip, files=files)
    return ChipDataset([scene], chip, ClassMap([0, 1, 2, 3]), fill=[1000.0] * len(BANDS))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="scene side in px (10 m grid)")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--chips", type=int, default=400, help="chips per measurement")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        layouts = write_layouts(Path(tmp), args.size)
        label = Path(tmp) / "label.tif"
        datasets = {name: dataset_for(spec, label, args.chip) for name, spec in layouts.items()}
        step = 8
        grid = np.arange(0, args.size - args.chip + 1, step)
        origins = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        sampler = RandomChipSampler([origins], [np.ones(len(origins))], args.chips, seed=0)
        rates: dict[tuple[str, str, int], list[float]] = {}
        for regime, cache_mb in (("cold", 8), ("warm", 1024)):
            set_cache(cache_mb)
            for workers in (0, 2):
                for _ in range(args.repeats):
                    for name, ds in datasets.items():
                        rate = dataset_read(ds, sampler, workers, args.batch)
                        rates.setdefault((regime, name, workers), []).append(rate)
    print(
        f"# {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__} | "
        f"rasterio {rasterio.__version__} | GDAL {rasterio.__gdal_version__} | {time.strftime('%Y-%m-%d')}"
    )
    print(f"# {args.size}² px 6-band uint16 scene + uint8 label, tiled 256 deflate, random {args.chip}-px "
          f"chips, batch {args.batch}, {args.chips} chips x {args.repeats} repeats (median)")  # fmt: skip
    print("| cache | layout | workers | chips/s | vs prestacked |")
    print("|---|---|---:|---:|---:|")
    for regime in ("cold", "warm"):
        for workers in (0, 2):
            base = float(np.median(rates[(regime, "prestacked", workers)]))
            for name in datasets:
                rate = float(np.median(rates[(regime, name, workers)]))
                print(f"| {regime} | {name} | {workers} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
