"""Chips/s of geoseg's ChipDataset (0 and 2 workers) against plain rasterio windowed reads.

Both sides read the same random 256-px windows of the same files: a 6-band uint16 image GeoTIFF
(tiled 256, deflate, pixel-interleaved) and its uint8 label on the same grid. The plain baseline
keeps both files open and calls ``src.read(window=...)`` for the image and the label; the dataset
also builds the nodata mask, fills invalid pixels, maps label codes to class indices and batches,
through a DataLoader. (Normalisation to float32 happens on the training device, not here.)

Two regimes, in one run:
- ``cold``: GDAL's block cache (GDAL_CACHEMAX) is far smaller than the scene, so most reads
  decompress their blocks, as when training over more imagery than fits in the cache;
- ``warm``: the whole scene fits in the cache, so a read is a copy out of memory and the
  dataset's own work (nodata mask, class lookup, batching) is all that differs.

    python scripts/bench_io.py                     # writes the scene to a temp folder
    python scripts/bench_io.py --chips 600 --size 4096
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
from rasterio.env import set_gdal_config
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch.utils.data import DataLoader

from geoseg.data.dataset import ChipDataset, collate_batch
from geoseg.data.labels import ClassMap
from geoseg.data.loader import configure_gdal_worker
from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scenes import inspect_scene
from geoseg.data.stats import compute_stats


def write_scene(folder: Path, size: int, bands: int = 6) -> tuple[Path, Path]:
    """A deterministic textured scene and its label, written block by block to keep memory low."""
    rng = np.random.default_rng(0)
    profile = dict(
        driver="GTiff", width=size, height=size, crs="EPSG:32633",
        transform=from_origin(500_000, 5_000_000, 10, 10), tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", interleave="pixel",
    )  # fmt: skip
    image, label = folder / "bench_image.tif", folder / "bench_label.tif"
    with (
        rasterio.open(image, "w", count=bands, dtype="uint16", nodata=0, **profile) as img,
        rasterio.open(label, "w", count=1, dtype="uint8", nodata=255, **profile) as lab,
    ):
        for _, window in img.block_windows(1):
            h, w = window.height, window.width
            base = rng.integers(200, 3000, size=(bands, 1, 1))
            img.write(
                (base + rng.normal(0, 150, size=(bands, h, w))).clip(1, 60000).astype(np.uint16),
                window=window,
            )
            lab.write(rng.integers(0, 4, size=(1, h, w), dtype=np.uint8), window=window)
    return image, label


def plain_read(image: Path, label: Path, chips: list, size: int) -> float:
    """Chips/s of ``rasterio`` windowed reads of the same windows (files opened once)."""
    with rasterio.open(image) as img, rasterio.open(label) as lab:
        start = time.perf_counter()
        for chip in chips:
            window = Window(chip.col, chip.row, size, size)
            img.read(window=window)
            lab.read(1, window=window)
        return len(chips) / (time.perf_counter() - start)


def dataset_read(dataset: ChipDataset, sampler: RandomChipSampler, workers: int, batch: int) -> float:
    """Chips/s through a DataLoader over the ChipDataset (worker start-up excluded)."""
    extra = {"worker_init_fn": configure_gdal_worker, "prefetch_factor": 4} if workers else {}
    loader = DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate_batch, **extra
    )
    it = iter(loader)
    next(it)  # start the workers and open the files before timing
    start, n = time.perf_counter(), 0
    for b in it:
        n += len(b["image"])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="scene side in px")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument(
        "--chips", type=int, default=1200, help="chips per warm measurement (cold: a quarter)"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="median of N, plain and dataset interleaved")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        image, label = write_scene(Path(tmp), args.size)
        scene = inspect_scene(str(image), str(label), class_codes=[0, 1, 2, 3], chip_size=args.chip)
        stats = compute_stats([scene], progress=False)
        dataset = ChipDataset([scene], args.chip, ClassMap([0, 1, 2, 3]), fill=stats.mean)
        grid = np.arange(0, args.size - args.chip + 1, 8)
        origins = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        rows = []
        for regime, cache_mb, n_chips in (("cold", 8, args.chips // 4), ("warm", 1024, args.chips)):
            set_cache(cache_mb)
            sampler = RandomChipSampler([origins], [np.ones(len(origins))], n_chips, seed=0)
            chips = list(sampler)
            rates: dict[str, list[float]] = {}
            for _ in range(args.repeats):  # interleaved, so drift in machine speed hits both alike
                rates.setdefault("plain", []).append(plain_read(image, label, chips, args.chip))
                rates.setdefault("ds0", []).append(dataset_read(dataset, sampler, 0, args.batch))
            for _ in range(max(1, args.repeats // 2)):
                rates.setdefault("ds2", []).append(dataset_read(dataset, sampler, 2, args.batch))
            med = {k: float(np.median(v)) for k, v in rates.items()}
            names = {"plain": "plain rasterio read (image + label)", "ds0": "ChipDataset, 0 workers",
                     "ds2": "ChipDataset, 2 workers"}  # fmt: skip
            rows += [(regime, cache_mb, n_chips, names[k], med[k], med["plain"]) for k in names]
    print(f"# {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__} | "
          f"rasterio {rasterio.__version__} | GDAL {rasterio.__gdal_version__}")  # fmt: skip
    print(
        f"# scene {args.size}x{args.size}, 6-band uint16 (+ uint8 label), tiled 256 deflate; "
        f"random {args.chip}-px chips"
    )
    print("| cache | GDAL_CACHEMAX | chips | reader | chips/s (median) | vs plain read |")
    print("|---|---:|---:|---|---:|---:|")
    for regime, cache_mb, n_chips, name, rate, plain in rows:
        print(f"| {regime} | {cache_mb} MB | {n_chips} | {name} | {rate:.1f} | {rate / plain:.2f}x |")


def set_cache(megabytes: int) -> None:
    """Set GDAL's block cache here and (through the environment) in DataLoader workers."""
    os.environ["GDAL_CACHEMAX"] = str(megabytes)
    set_gdal_config("GDAL_CACHEMAX", megabytes * 2**20)  # an int here is bytes


if __name__ == "__main__":
    main()
