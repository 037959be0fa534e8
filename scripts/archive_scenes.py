"""Generate an archive of small scenes for scripts/bench_archive.py: 6-band uint16, 256 px, 2 classes.

Each scene is its own file with its own content (smooth fields plus noise, deflate-compressed,
256-px tiles) and a uint8 label in which class 1 covers about 3% of the pixels (a few small
discs), like roads or buildings. Scenes 0..N-1 of a set are written once and reused.

    python scripts/archive_scenes.py outputs/bench_data/archive 10000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from tqdm import tqdm

SIZE, BANDS = 256, 6


def write_scene(root: Path, i: int) -> None:
    image, label = root / "images" / f"scene_{i:05d}.tif", root / "labels" / f"scene_{i:05d}.tif"
    if image.exists() and label.exists():
        return
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = np.sin(6 * xx + rng.random() * 6) + np.cos(5 * yy + rng.random() * 6)
    bands = [
        (1000 + 400 * b + 300 * base * (1 + 0.2 * b) + rng.normal(0, 40, (SIZE, SIZE))) for b in range(BANDS)
    ]
    img = np.clip(np.stack(bands), 1, 65535).astype(np.uint16)
    lab = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(4):  # discs of radius ~13 px: about 3% of the scene
        cy, cx = rng.integers(16, SIZE - 16, 2)
        lab[(np.arange(SIZE)[:, None] - cy) ** 2 + (np.arange(SIZE)[None] - cx) ** 2 < 13**2] = 1
    img[:, lab == 1] += 800  # the rare class is brighter: learnable
    transform = from_origin(500_000 + 3000 * (i % 100), 5_000_000 - 3000 * (i // 100), 10, 10)
    profile = {"driver": "GTiff", "width": SIZE, "height": SIZE, "crs": CRS.from_epsg(32633),
               "transform": transform, "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate"}  # fmt: skip
    image.parent.mkdir(parents=True, exist_ok=True)
    label.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(image, "w", **profile, count=BANDS, dtype="uint16", nodata=0) as dst:
        dst.write(img)
    with rasterio.open(label, "w", **profile, count=1, dtype="uint8", nodata=255) as dst:
        dst.write(lab, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path)
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    for i in tqdm(range(args.count), desc="scenes", unit="scene"):
        write_scene(args.root, i)


if __name__ == "__main__":
    main()
