"""Deterministic demo scenes: 6-band uint16 UTM GeoTIFFs with nodata edges and 4-class labels.

The classes (water, vegetation, bare soil, built-up) have plausible Sentinel-2-like spectra, but bare
soil and built-up overlap spectrally, so a model must also learn texture (built-up is a pattern of
roofs and streets). Scene 2's label is on a 20 m grid and scene 3's on a larger, offset grid, to
exercise label alignment. Everything is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geoseg.errors import GeosegError
from geoseg.io import WRITE_FIX, write_errors

BAND_NAMES = ("B02_blue", "B03_green", "B04_red", "B08_nir", "B11_swir1", "B12_swir2")
CLASS_NAMES = ("water", "vegetation", "bare_soil", "built_up")
# Mean surface reflectance x 10000 per class and band (B2, B3, B4, B8, B11, B12).
SPECTRA = np.array(
    [
        [600, 500, 300, 200, 100, 60],
        [300, 600, 350, 3300, 1800, 800],
        [1100, 1350, 1650, 2200, 2900, 2400],
        [1250, 1300, 1450, 1900, 2400, 2100],
    ],
    dtype=np.float64,
)
NODATA = 0
LABEL_NODATA = 255
PIXEL = 10.0
CRS_UTM = CRS.from_epsg(32633)  # WGS 84 / UTM zone 33N
SPLITS = {"train": (0, 1, 2, 3), "val": (4, 5)}
DEMO_MARK = ".geoseg-demo.json"  # the files a demo folder holds, so only they are ever replaced


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Gaussian-filtered white noise (FFT), standardised to mean 0 and std 1."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * scale) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def class_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Coherent land cover: parcels of crops and bare soil, forest, a river and lakes, town blocks."""
    h, w = shape
    cls = np.full(shape, 2, dtype=np.uint8)
    rows = np.cumsum(rng.integers(24, 72, size=h // 20))
    cols = np.cumsum(rng.integers(24, 72, size=w // 20))
    parcel = (
        np.searchsorted(rows, np.arange(h))[:, None] * 1000 + np.searchsorted(cols, np.arange(w))[None, :]
    )
    _, parcel = np.unique(parcel, return_inverse=True)
    crop = rng.random(parcel.max() + 1) < 0.55
    cls[crop[parcel.reshape(shape)]] = 1
    cls[smooth_noise(rng, shape, 18) > 0.9] = 1  # forest patches
    urban = smooth_noise(rng, shape, 45) > 1.0
    cls[urban] = 3
    yy, xx = np.mgrid[0:h, 0:w]
    river = h * rng.uniform(0.3, 0.7) + 0.12 * h * np.sin(xx / rng.uniform(40, 90) + rng.uniform(0, 6))
    cls[np.abs(yy - river) < rng.uniform(4, 9)] = 0
    cls[smooth_noise(rng, shape, 30) < -1.6] = 0  # lakes
    return cls


def render_image(rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
    """(6, H, W) uint16 reflectance with per-class spectra, within-class texture and sensor noise."""
    h, w = cls.shape
    img = SPECTRA[cls].transpose(2, 0, 1).copy()
    img *= 1.0 + 0.12 * smooth_noise(rng, (h, w), 6)[None]  # within-class brightness
    veg = cls == 1
    img[3][veg] *= 1.0 + 0.2 * smooth_noise(rng, (h, w), 10)[veg]  # vegetation vigour in NIR
    built = cls == 3
    yy, xx = np.mgrid[0:h, 0:w]
    street = (yy % 14 < 3) | (xx % 14 < 3)
    roofs = rng.uniform(0.55, 1.6, size=(h // 14 + 1, w // 14 + 1))[yy // 14, xx // 14]
    img[:, built & ~street] *= roofs[built & ~street]
    img[:, built & street] *= 0.55
    img *= rng.uniform(0.9, 1.1)  # scene illumination
    img[0] += rng.uniform(0, 250)  # haze in blue
    img += rng.normal(0, 60, size=img.shape)
    return np.clip(img, 1, 20000).astype(np.uint16)


def nodata_region(i: int, shape: tuple[int, int]) -> np.ndarray:
    """A swath-edge wedge or a tile border, different per scene (scene 5 has none)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        xx + yy < 0.35 * (h + w),
        xx < 48,
        (w - xx) + (h - yy) < 0.3 * (h + w),
        yy < 40,
        xx > 0.8 * w + 0.3 * yy,
        np.zeros(shape, dtype=bool),
    ][i % 6]


def _write(path: Path, data: np.ndarray, transform, nodata: int, names=None) -> None:
    profile = dict(
        driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
        crs=CRS_UTM, transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
        compress="deflate", interleave="pixel",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for b, name in enumerate(names or (), start=1):
            dst.set_band_description(b, name)


def write_scene(out: Path, split: str, i: int, size: int, seed: int) -> tuple[str, str]:
    """Write scene ``i``'s image and label; returns their paths relative to ``out``."""
    rng = np.random.default_rng([seed, i])
    x0, y0 = 500_000.0 + i * (size + 100) * PIXEL, 5_100_000.0
    if i == 2:  # label on a 20 m grid
        lab = class_map(rng, (size // 2, size // 2))
        cls = np.repeat(np.repeat(lab, 2, axis=0), 2, axis=1)
        lab_transform = from_origin(x0, y0, 2 * PIXEL, 2 * PIXEL)
    elif i == 3:  # label on a larger grid offset by 32 px
        lab = class_map(rng, (size + 64, size + 64))
        cls = lab[32 : 32 + size, 32 : 32 + size]
        lab_transform = from_origin(x0 - 32 * PIXEL, y0 + 32 * PIXEL, PIXEL, PIXEL)
    else:
        lab = cls = class_map(rng, (size, size))
        lab_transform = from_origin(x0, y0, PIXEL, PIXEL)
    img = render_image(rng, cls)
    hole = nodata_region(i, (size, size))
    img[:, hole] = NODATA
    if lab.shape == cls.shape:
        lab = lab.copy()
        lab[hole] = LABEL_NODATA
    name = f"scene_{i:02d}.tif"
    for sub in ("images", "labels"):
        (out / split / sub).mkdir(parents=True, exist_ok=True)
    _write(out / split / "images" / name, img, from_origin(x0, y0, PIXEL, PIXEL), NODATA, BAND_NAMES)
    _write(out / split / "labels" / name, lab[None], lab_transform, LABEL_NODATA)
    return f"{split}/images/{name}", f"{split}/labels/{name}"


def demo_files(root: Path) -> list[str] | None:
    """The files (relative paths) a geoseg demo folder holds, or None when ``root`` is no demo folder.

    A demo folder lists them in :data:`DEMO_MARK`; one written before the mark is recognised by its
    ``manifest.csv`` of demo scene names."""
    mark = root / DEMO_MARK
    if mark.is_file():
        try:
            files = json.loads(mark.read_text())["files"]
            return [str(f) for f in files]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        with open(root / "manifest.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    names = {f"{split}/{kind}/scene_{i:02d}.tif" for split, ids in SPLITS.items() for i in ids
             for kind in ("images", "labels")}  # fmt: skip
    listed = [p for row in rows for p in (row.get("image"), row.get("label"))]
    if not rows or not set(listed) <= names:
        return None
    return ["manifest.csv", *listed]


def foreign_files(root: Path, ours: list[str] | None) -> list[str]:
    """Files under ``root`` that the demo did not write (relative paths, sorted)."""
    keep = set(ours or ()) | {DEMO_MARK}
    found = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(p for p in found if p not in keep)


def make_demo_data(root: str | os.PathLike, size: int = 512, seed: int = 0, overwrite: bool = False) -> Path:
    """Write the demo scenes and ``manifest.csv`` under ``root``; returns it.

    A missing ``root`` is written whole in a temporary folder, then renamed. An existing demo folder is
    kept (``overwrite=False``) or has each of its demo files replaced atomically (``overwrite=True``);
    any other file in it stays. A folder that is not a demo folder and not empty is refused.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise GeosegError(f"demo data: '{root}' is a file, not a folder; choose a new folder (root=...)")
    ours = demo_files(root) if root.exists() else None
    others = foreign_files(root, ours) if root.exists() and ours is None else []
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise GeosegError(f"demo data: '{root}' is not a demo data folder (it holds {shown}); geoseg never "
                          "writes into a folder of yours: choose a new or empty folder")  # fmt: skip
    if ours is not None and not overwrite:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp.chmod(0o755)
    try:
        with write_errors(root, "demo data", WRITE_FIX):
            written = _write_all(tmp, size, seed)
            (tmp / DEMO_MARK).write_text(json.dumps({"size": size, "seed": seed, "files": written}) + "\n")
            if not root.exists():
                os.replace(tmp, root)
                return root
            _move_into(tmp, root, [*written, DEMO_MARK], stale=set(ours or ()) - set(written))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into(tmp: Path, root: Path, files: list[str], stale: set[str]) -> None:
    """Rename each of ``files`` from ``tmp`` onto ``root`` (one atomic replace each), then delete the
    ``stale`` demo files the new set no longer has; nothing else in ``root`` is touched."""
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, root / rel)
    for rel in stale:
        with contextlib.suppress(FileNotFoundError):
            (root / rel).unlink()


def _write_all(tmp: Path, size: int, seed: int) -> list[str]:
    """Write every scene and the manifest under ``tmp``; returns the written files' relative paths."""
    rows = []
    for split, ids in SPLITS.items():
        for i in ids:
            image, label = write_scene(tmp, split, i, size, seed)
            rows.append({"image": image, "label": label, "split": split})
    with open(tmp / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return ["manifest.csv", *(p for row in rows for p in (row["image"], row["label"]))]
