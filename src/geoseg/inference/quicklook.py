"""A PNG quicklook of a prediction: the input in (false) colour beside the coloured class map, with a legend.

Both rasters are read decimated (from overviews where there are any), so a quicklook of a huge scene
costs a few megabytes. Pillow draws it; it comes with torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.enums import Resampling

from geoseg.data.scenes import Scene
from geoseg.data.stack_reader import StackReader
from geoseg.errors import GeosegError
from geoseg.inference.loaded import ClassInfo
from geoseg.io import atomic_write

COLOUR_NAMES = (("red", "b04", "b4"), ("green", "b03", "b3"), ("blue", "b02", "b2"))
NODATA_RGB = (40, 40, 40)


def display_bands(names: Sequence[str | None], bands: Sequence[int]) -> list[int]:
    """Red, green and blue among ``bands`` by their names; else the first three (or the first).

    ``names`` are the names of every stacked band, ``bands`` 1-based stack indices.
    """
    parts = {b: set(((names[b - 1] if b <= len(names) else None) or "").lower().replace("-", "_").split("_"))
             for b in bands}  # fmt: skip
    picked = [next((b for b in bands if parts[b] & set(keys)), None) for keys in COLOUR_NAMES]
    if all(p is not None for p in picked):
        return picked  # type: ignore[return-value]
    return list(bands[:3]) if len(bands) >= 3 else [bands[0]] * 3


def quicklook_display(scene: Scene, bands: Any) -> list[int] | None:
    """``quicklook_bands`` (1-based stack indices or band names; 1 or 3 of them) as stack indices,
    checked against ``scene`` before any tile is predicted; ``None`` = chosen by band name."""
    if bands is None:
        return None
    if isinstance(bands, (str, int)) or not isinstance(bands, Sequence) or len(bands) not in (1, 3):
        raise GeosegError(
            f"quicklook_bands={bands!r} must list 1 or 3 bands (shown as grey, or as red, green, blue), "
            "e.g. quicklook_bands=[4,3,2] or [B04_red,B03_green,B02_blue]"
        )
    names = list(scene.band_names)
    out = []
    for band in bands:
        if isinstance(band, str) and not band.isdigit():
            if band not in names:
                raise GeosegError(
                    f"quicklook_bands: '{band}' is not a band name of '{scene.image}' "
                    f"(names: {[n for n in names if n]}); use a name or a 1-based index"
                )
            band = names.index(band) + 1
        if isinstance(band, bool) or not isinstance(band, (int, str)) or not 1 <= int(band) <= len(names):
            raise GeosegError(
                f"quicklook_bands: {band!r} is not a band of '{scene.image}', which has {len(names)} "
                f"(1..{len(names)})"
            )
        out.append(int(band))
    return out * 3 if len(out) == 1 else out


def decimated_shape(height: int, width: int, size: int) -> tuple[int, int]:
    scale = max(height, width) / size
    return (
        (height, width)
        if scale <= 1
        else (max(1, math.ceil(height / scale)), max(1, math.ceil(width / scale)))
    )


def stretch(arr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(3, h, w) -> (h, w, 3) uint8, each band stretched between its 2nd and 98th percentiles."""
    out = np.zeros((*arr.shape[1:], 3), dtype=np.uint8)
    for i, band in enumerate(arr.astype(np.float64)):
        values = band[valid] if valid.any() else band.ravel()
        lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
        scaled = np.clip((band - lo) / max(hi - lo, 1e-12) * 255, 0, 255)
        out[..., i] = np.where(valid, scaled, 0).astype(np.uint8)
    out[~valid] = NODATA_RGB
    return out


def colour_classes(labels: np.ndarray, classes: ClassInfo, nodata: int | None) -> np.ndarray:
    lut = np.zeros((max(len(classes.colors), int(labels.max(initial=0)) + 1), 3), dtype=np.uint8)
    lut[: len(classes.colors)] = np.asarray(classes.colors, dtype=np.uint8)
    rgb = lut[np.minimum(labels, len(lut) - 1)]
    if nodata is not None:
        rgb[labels == nodata] = NODATA_RGB
    return rgb


def write_quicklook(
    scene: Scene, prediction: str, classes: ClassInfo, path: str, size: int = 768,
    display: Sequence[int] | None = None,
) -> None:  # fmt: skip
    """Write ``path`` (PNG): the scene in colour, the class map of ``prediction``, and a class legend.

    ``display`` are 1-based stack bands shown as red, green, blue; the nodata footprint follows the
    scene's validity rule over all its selected bands.
    """
    shape = decimated_shape(scene.height, scene.width, size)
    show = list(display) if display else display_bands(scene.band_names, scene.bands)  # see quicklook_display
    full = scene.reader()
    colour = StackReader(scene.stack, tuple(show), scene.grid, scene.invalid, scene.name)
    try:
        _, invalid = full.read_decimated(shape)
        arr, _ = colour.read_decimated(shape)
    finally:
        full.close()
        colour.close()
    left = stretch(arr, np.ones(shape, dtype=bool) if invalid is None else ~invalid)
    with rasterio.open(prediction) as pred:
        labels = pred.read(1, out_shape=shape, resampling=Resampling.nearest)
        right = colour_classes(labels, classes, pred.nodata)
    h, w = shape
    gap, row = 8, 16
    legend_h = row * len(classes.names) + gap
    canvas = Image.new("RGB", (2 * w + gap, h + legend_h), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, 0))
    canvas.paste(Image.fromarray(right), (w + gap, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, rgb) in enumerate(zip(classes.names, classes.colors, strict=True)):
        y = h + gap // 2 + i * row
        draw.rectangle((w + gap, y + 2, w + gap + 10, y + 12), fill=tuple(rgb), outline=(0, 0, 0))
        draw.text((w + gap + 16, y), name, fill=(0, 0, 0))
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"), "quicklook")
