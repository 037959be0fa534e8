"""A PNG quicklook of a prediction, drawn with matplotlib: titled panels of the input in (false)
colour and the class map, and with labels the label map and where the prediction is wrong, above one
legend of every class, nodata and (with labels) the error colours.

Every raster is read decimated (from overviews where there are any), so a quicklook of a huge scene
costs a few megabytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from geoseg.classes import ClassInfo
from geoseg.data.labels import ClassMap, read_label_decimated
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.data.stack_reader import StackReader
from geoseg.errors import GeosegError
from geoseg.inference.display import NODATA_RGB, colour_classes, display_bands, stretch
from geoseg.inference.scoring import ScoreOptions
from geoseg.io import atomic_write
from geoseg.output_policy import PNG_METADATA

# the error panel: light grey right, magenta wrong (a colour no class default takes), mid grey unlabelled
CORRECT_RGB, WRONG_RGB, UNLABELLED_RGB = (235, 235, 235), (230, 0, 170), (150, 150, 150)


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


def read_labels(prediction: str, labels: str, classes: ClassInfo, shape: tuple[int, int],
                opts: ScoreOptions) -> np.ndarray:  # fmt: skip
    """The label as class indices on the prediction's grid at ``shape`` (nearest); no class or label
    nodata -> ``len(classes.codes)``. Read as ``geoseg evaluate`` reads it (warped onto the grid when
    the grids differ; polygons burnt)."""
    num = len(classes.codes)
    scene = inspect_scene(prediction, labels, bands=[1], label_nodata=opts.label_nodata,
                          unknown_labels="ignore", vector=opts.vector, class_codes=classes.codes)  # fmt: skip
    raw = read_label_decimated(scene, classes.codes, shape)
    return ClassMap(classes.codes, ignore_index=num)(raw).astype(np.int64)


def error_rgb(predicted: np.ndarray, target: np.ndarray, num: int, nodata: int | None) -> np.ndarray:
    """The error panel: right, wrong, unlabelled, and dark grey where nothing was predicted."""
    rgb = np.empty((*predicted.shape, 3), dtype=np.uint8)
    rgb[:] = CORRECT_RGB
    rgb[predicted != target] = WRONG_RGB
    rgb[target >= num] = UNLABELLED_RGB
    if nodata is not None:
        rgb[predicted == nodata] = NODATA_RGB
    return rgb


def legend_handles(classes: ClassInfo, with_errors: bool) -> list[Patch]:
    """A swatch for every class and for nodata (and the error panel's colours)."""

    def swatch(rgb: Sequence[int], label: str) -> Patch:
        return Patch(facecolor=np.asarray(rgb) / 255, edgecolor="black", linewidth=0.5, label=label)

    handles = [swatch(rgb, name) for name, rgb in zip(classes.names, classes.colors, strict=True)]
    handles.append(swatch(NODATA_RGB, "nodata"))
    if with_errors:
        handles += [swatch(WRONG_RGB, "wrong"), swatch(CORRECT_RGB, "right")]
        handles.append(swatch(UNLABELLED_RGB, "unlabelled"))
    return handles


def input_panel(
    scene: Scene, shape: tuple[int, int], display: Sequence[int] | None
) -> tuple[np.ndarray, str]:
    """The scene's bands ``display`` (else red, green, blue by name) stretched, nodata dark grey."""
    show = list(display) if display else display_bands(scene.band_names, scene.bands)  # see quicklook_display
    full = scene.reader()
    colour = StackReader(scene.stack, tuple(show), scene.grid, scene.invalid, scene.name)
    try:
        _, invalid = full.read_decimated(shape)
        arr, _ = colour.read_decimated(shape)
    finally:
        full.close()
        colour.close()
    names = [scene.band_names[b - 1] or f"band {b}" for b in show]
    shown_bands = names[0] if len(set(show)) == 1 else ", ".join(names)
    valid = np.ones(shape, dtype=bool) if invalid is None else ~invalid
    return stretch(arr, valid), f"{scene.name}: {shown_bands}"


def write_quicklook(
    scene: Scene | None, prediction: str, classes: ClassInfo, path: str, size: int = 768,
    display: Sequence[int] | None = None, labels: str | None = None, label_opts: ScoreOptions | None = None,
) -> None:  # fmt: skip
    """Write ``path`` (PNG): the scene in colour (when given) and the class map of ``prediction``; with
    ``labels`` also the label map and the errors (with the pixel accuracy of the panel in its title).

    ``display`` are 1-based stack bands shown as red, green, blue; the nodata footprint follows the
    scene's validity rule over all its selected bands.
    """
    with rasterio.open(prediction) as pred:
        shape = decimated_shape(pred.height, pred.width, size)
    panels = [] if scene is None else [input_panel(scene, shape, display)]
    with rasterio.open(prediction) as pred:
        predicted = pred.read(1, out_shape=shape, resampling=Resampling.nearest).astype(np.int64)
        nodata = None if pred.nodata is None else int(pred.nodata)
    panels.append((colour_classes(predicted, classes, nodata), "prediction"))
    if labels is not None:
        num = len(classes.codes)
        target = read_labels(prediction, labels, classes, shape, label_opts or ScoreOptions())
        shown = colour_classes(np.where(target >= num, 0, target), classes, None)
        shown[target >= num] = NODATA_RGB
        scored = (target < num) & (predicted != nodata if nodata is not None else True)
        accuracy = float((predicted == target)[scored].mean()) if scored.any() else math.nan
        panels.append((shown, "label"))
        panels.append((error_rgb(predicted, target, num, nodata), f"errors (pixel accuracy {accuracy:.3f})"))
    h, w = shape
    panel_in = 4.0
    fig = Figure(figsize=(panel_in * len(panels) * w / max(h, w) + 0.4, panel_in * h / max(h, w) + 1.2))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (image, title) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    handles = legend_handles(classes, labels is not None)
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, metadata=PNG_METADATA), "quicklook"
    )
