"""Random-chip read rate of one scene in each `geoseg convert` compression (single thread, GDAL cache off).

    python scripts/bench_convert.py --size 2048 --chips 100

Writes a synthetic 13-band int16 scene (smooth fields + noise, as reflectance x 10000) tiled 512 with
deflate (the usual COG), converts it with every compression and times random chip reads at any offset.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.data.convert import COMPRESSIONS, convert_file


def synthetic(path: str, size: int, bands: int = 13) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="int16", tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 10, 10), nodata=0)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for b in range(bands):
            field = 3000 + 2000 * np.sin(6 * xx + b) * np.cos(4 * yy - b) + rng.normal(0, 150, (size, size))
            dst.write(field.astype("int16"), b + 1)


def chips_per_s(path: str, chip: int, count: int) -> float:
    rng = np.random.default_rng(1)
    with rasterio.Env(GDAL_CACHEMAX=0, GDAL_NUM_THREADS=1), rasterio.open(path) as src:
        offsets = rng.integers(0, src.width - chip, (count, 2))
        start = time.perf_counter()
        for x, y in offsets:
            src.read(window=Window(int(x), int(y), chip, chip))
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--chips", type=int, default=100)
    parser.add_argument("--chip", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "deflate_source.tif")
        synthetic(source, args.size)
        rows = [("deflate (source)", source)]
        for compress in COMPRESSIONS:
            target = os.path.join(tmp, f"{compress}.tif")
            convert_file(source, target, block=512, compress=compress, overviews=False)
            rows.append((compress, target))
        print(f"| layout ({args.size}², 13 × int16, 512-px tiles) | MB | {args.chip}-px chips/s (1 thread) |")
        print("|---|---|---|")
        for name, path in rows:
            rate = chips_per_s(path, args.chip, args.chips)
            print(f"| {name} | {os.path.getsize(path) / 1e6:.1f} | {rate:.1f} |")


if __name__ == "__main__":
    main()
