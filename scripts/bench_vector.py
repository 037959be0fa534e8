"""Chips/s of vector labels rasterised per chip against the same labels pre-rasterised as a GeoTIFF.

A generated 4096² px scene at 1 m (3-band uint8 image, tiled 256 + deflate) with ``--polygons``
building-like polygons (rotated rectangles of 6-40 m, code 1, plus 20% of code 2) written to a
GeoPackage, and the same polygons rasterised once into a uint8 label GeoTIFF (tiled 256 + deflate).
Two measurements, 0 workers, the same random 256-px chips for both, median of ``--repeats``:

- ``label only``: the label of each chip (``VectorLabels.read`` against ``rasterio`` ``read(window)``);
- ``ChipDataset``: image + label + masks + class lookup + batching, through a DataLoader;

each with GDAL's block cache ``cold`` (8 MB: most raster reads decompress their blocks, as when
training over more imagery than fits in memory) and ``warm`` (1 GB: every block stays cached).

    python scripts/bench_vector.py
    python scripts/bench_vector.py --polygons 10000 --chips 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
import torch
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.windows import Window
from torch.utils.data import DataLoader

from bench_io import set_cache  # scripts/ is on sys.path when run from the repo root
from geoseg.data.dataset import ChipDataset, collate_batch
from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scenes import inspect_scene

SIZE = 4096
TRANSFORM = from_origin(400_000, 5_600_000, 1, 1)
PROFILE = {"driver": "GTiff", "crs": "EPSG:32632", "transform": TRANSFORM, "width": SIZE, "height": SIZE,
           "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}  # fmt: skip


def write_data(folder: Path, n: int) -> tuple[Path, Path, Path]:
    """The image, the GeoPackage of ``n`` polygons and the same polygons as a label GeoTIFF."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(20, SIZE - 20, size=(n, 2))
    sizes = rng.uniform(6, 40, size=(n, 2))
    angles = rng.uniform(0, 90, size=n)
    geoms = []
    for (x, y), (w, h), a in zip(centres, sizes, angles, strict=True):
        box = shapely.box(-w / 2, -h / 2, w / 2, h / 2)
        box = shapely.affinity.rotate(box, a, origin=(0, 0))
        geoms.append(shapely.affinity.translate(box, TRANSFORM.c + x, TRANSFORM.f - y))
    codes = np.where(rng.random(n) < 0.2, 2, 1).astype(np.int32)
    gpkg = folder / "buildings.gpkg"
    pyogrio.raw.write(str(gpkg), shapely.to_wkb(np.array(geoms, dtype=object)), [codes], ["code"],
                      geometry_type="Polygon", crs="EPSG:32632", driver="GPKG")  # fmt: skip
    label = folder / "buildings.tif"
    burnt = rasterize(zip(geoms, codes.tolist(), strict=True), out_shape=(SIZE, SIZE), transform=TRANSFORM,
                      dtype="uint8")  # fmt: skip
    with rasterio.open(label, "w", count=1, dtype="uint8", **PROFILE) as dst:
        dst.write(burnt, 1)
    image = folder / "image.tif"
    with rasterio.open(image, "w", count=3, dtype="uint8", nodata=0, **PROFILE) as dst:
        for _, window in dst.block_windows(1):
            shape = (3, window.height, window.width)
            dst.write(rng.integers(1, 255, size=shape, dtype=np.uint8), window=window)
    return image, gpkg, label


def label_rate(reader, chips, size: int) -> float:
    start = time.perf_counter()
    for chip in chips:
        reader.read(1, window=Window(chip.col, chip.row, size, size))
    return len(chips) / (time.perf_counter() - start)


def dataset_rate(dataset: ChipDataset, sampler: RandomChipSampler, batch: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=0, collate_fn=collate_batch)
    start, n = time.perf_counter(), 0
    for b in loader:
        n += len(b["image"])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--polygons", type=int, default=10_000)
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--chips", type=int, default=800)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        image, gpkg, label = write_data(Path(tmp), args.polygons)
        grid = np.arange(0, SIZE - args.chip + 1, 4)
        origins = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
        sampler = RandomChipSampler([origins], [np.ones(len(origins))], args.chips, seed=0)
        chips = list(sampler)
        started = time.perf_counter()
        vector = inspect_scene(str(image), str(gpkg), class_codes=[0, 1, 2])
        load_seconds = time.perf_counter() - started
        raster = inspect_scene(str(image), str(label), class_codes=[0, 1, 2])
        scenes = {"vector (GeoPackage)": vector, "raster (GeoTIFF)": raster}
        rates: dict[tuple[str, str, str], list[float]] = {}
        for regime, cache_mb in (("cold", 8), ("warm", 1024)):
            set_cache(cache_mb)
            for _ in range(args.repeats):
                for name, scene in scenes.items():
                    src, reader = open_label_on_grid(scene, [0, 1, 2])
                    rate = label_rate(reader, chips, args.chip)
                    rates.setdefault((regime, "label only", name), []).append(rate)
                    src.close()
                    ds = ChipDataset([scene], args.chip, ClassMap([0, 1, 2]), fill=[128.0] * 3)
                    rate = dataset_rate(ds, sampler, args.batch)
                    rates.setdefault((regime, "ChipDataset", name), []).append(rate)
                    ds.close()
    print(f"# {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__} | rasterio "
          f"{rasterio.__version__} | GDAL {rasterio.__gdal_version__} | pyogrio {pyogrio.__version__} | "
          f"shapely {shapely.__version__} | {time.strftime('%Y-%m-%d')}")  # fmt: skip
    print(
        f"# {SIZE}² px at 1 m, {args.polygons} polygons, random {args.chip}-px chips, {args.chips} chips x "
        f"{args.repeats} repeats (median), 0 workers; start-up check of the vector scene {load_seconds:.2f} s"
    )
    print("| cache | what is read | labels | chips/s | vs raster |")
    print("|---|---|---|---:|---:|")
    for regime in ("cold", "warm"):
        for what in ("label only", "ChipDataset"):
            base = float(np.median(rates[(regime, what, "raster (GeoTIFF)")]))
            for name in scenes:
                rate = float(np.median(rates[(regime, what, name)]))
                print(f"| {regime} | {what} | {name} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
