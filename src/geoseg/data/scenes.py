"""Scenes: an image GeoTIFF, an optional label raster, a band list and nodata, checked at start-up."""

from __future__ import annotations

import csv
import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg.errors import GeosegError, first_line


@dataclass(frozen=True)
class Scene:
    """One image (and optional label) with everything the chip reader needs, resolved once."""

    image: str
    label: str | None
    bands: tuple[int, ...]
    nodata: float | None
    label_nodata: float | None
    height: int
    width: int
    label_on_grid: bool
    dtype: str = "uint16"
    region: tuple[int, int, int, int] | None = None  # (row0, col0, row1, col1) in px; None = whole scene
    label_dtype: str | None = None
    label_values: tuple[float, ...] | None = None  # distinct label values, when checked at start-up
    block: tuple[int, int] | None = None  # (rows, cols) of the image's internal blocks (tiles or strips)

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the part of the scene this split uses."""
        return self.region or (0, 0, self.height, self.width)

    @property
    def is_float(self) -> bool:
        """Whether the image holds floating-point values (so NaN/inf count as nodata)."""
        return np.issubdtype(np.dtype(self.dtype), np.floating)

    @property
    def name(self) -> str:
        return Path(self.image).stem


def open_raster(
    path: str | os.PathLike, what: str = "raster", options: str = "the data.* options"
) -> rasterio.DatasetReader:
    """Open ``path`` with rasterio, turning GDAL failures into one-line :class:`GeosegError` messages.

    ``options`` names what set the path, for the message when the file is missing.
    """
    path = str(path)
    if not os.path.exists(path):
        raise GeosegError(f"{what} file not found: '{path}'. Check the path or {options}.")
    try:
        with warnings.catch_warnings():  # a missing georeference is checked and reported by the caller
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        reason = first_line(err)
        if "not recognized as being in a supported file format" in reason:
            reason = "GDAL does not recognise its format"
        raise GeosegError(
            f"cannot read {what} '{path}' as a raster ({reason}); check that it is a complete GeoTIFF."
        ) from None


def unreadable(what: str, path: str) -> GeosegError:
    """The one-line error for a raster whose header opens but whose pixels cannot be read."""
    return GeosegError(
        f"{what} '{path}' is truncated or corrupt (GDAL cannot read its pixels); re-download or re-export it."
    )


def check_readable(src: rasterio.DatasetReader, path: str, what: str = "raster") -> None:
    """Read the last block of every band, which a truncated file has lost, or fail with one line.

    GeoTIFF writers put the blocks in raster order (COGs put the full-resolution blocks last), so a
    cut-off file fails here at start-up instead of in the middle of a run; it costs one block per band.
    """
    rows, cols = src.block_shapes[0]
    row0, col0 = (src.height - 1) // rows * rows, (src.width - 1) // cols * cols
    try:
        src.read(window=Window(col0, row0, src.width - col0, src.height - row0))
    except RasterioError:
        raise unreadable(what, path) from None


def resolve_bands(
    src: rasterio.DatasetReader, bands: Sequence[int | str] | None, path: str
) -> tuple[int, ...]:
    """Turn 1-based indices or band descriptions into 1-based indices, checking the range."""
    if bands is None:
        return tuple(range(1, src.count + 1))
    names = [d for d in src.descriptions]
    out = []
    for band in bands:
        if isinstance(band, str) and not band.lstrip("-").isdigit():
            if band not in names:
                raise GeosegError(
                    f"data.bands: band '{band}' is not a band name of '{path}' (names: {names}); "
                    "use 1-based indices or one of those names."
                )
            out.append(names.index(band) + 1)
            continue
        index = int(band)
        if not 1 <= index <= src.count:
            raise GeosegError(
                f"data.bands: band index {index} is out of range for '{path}', which has {src.count} bands "
                f"(indices are 1-based: 1..{src.count})."
            )
        out.append(index)
    return tuple(out)


def label_fill_value(dtype: str, label_nodata: float | None, codes: Sequence[int]) -> float:
    """A value for label pixels outside the label's extent: its nodata, or a dtype value that is no class."""
    if label_nodata is not None:
        return label_nodata
    if np.issubdtype(np.dtype(dtype), np.floating):
        return float("nan")
    info = np.iinfo(np.dtype(dtype))
    for candidate in (info.max, info.min):
        if candidate not in codes:
            return candidate
    raise GeosegError(f"set data.label_nodata: every {dtype} value is a class code")


def check_label_values(
    src: rasterio.DatasetReader, codes: Sequence[int], label_nodata: float | None, path: str
) -> tuple[float, ...]:
    """The label's distinct values; fail when one is neither a class code nor the label nodata."""
    allowed = set(int(c) for c in codes)
    seen: set = set()
    try:
        for _, window in src.block_windows(1):
            seen.update(np.unique(src.read(1, window=window)).tolist())
    except RasterioError:
        raise unreadable("label", path) from None
    unknown = sorted(
        v for v in seen if not (v in allowed or (label_nodata is not None and v == label_nodata) or v != v)
    )
    if unknown:
        raise GeosegError(
            f"label '{path}' has values {unknown[:10]} that are not in data.classes "
            f"(codes {sorted(allowed)}); add them to data.classes, set data.label_nodata, "
            "or set data.unknown_labels=ignore."
        )
    return tuple(sorted(seen))


def _check_overlap(img: rasterio.DatasetReader, lab: rasterio.DatasetReader, image: str, label: str) -> None:
    left, bottom, right, top = transform_bounds(lab.crs, img.crs, *lab.bounds)
    ib = img.bounds
    if left >= ib.right or right <= ib.left or bottom >= ib.top or top <= ib.bottom:
        raise GeosegError(
            f"label '{label}' ({lab.crs}) does not overlap image '{image}' ({img.crs}); "
            "check that the label belongs to this image and that both CRSs are right."
        )


def inspect_scene(
    image: str,
    label: str | None,
    bands: Sequence[int | str] | None = None,
    nodata: float | None = None,
    label_nodata: float | None = None,
    class_codes: Sequence[int] = (),
    chip_size: int | None = None,
    unknown_labels: str = "error",
    region: Sequence[float] | None = None,
) -> Scene:
    """Open and validate one scene; every problem becomes a one-line :class:`GeosegError`.

    ``region`` = (left, top, right, bottom) as fractions of the scene restricts the split to that
    part of it, e.g. ``[0, 0, 0.75, 1]`` for training and ``[0.75, 0, 1, 1]`` for validation.
    """
    with open_raster(image, "image") as img:
        check_readable(img, image, "image")
        if img.crs is None:
            raise GeosegError(f"image '{image}' has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx).")
        band_idx = resolve_bands(img, bands, image)
        px_region = region_pixels(region, img.height, img.width)
        row0, col0, row1, col1 = px_region or (0, 0, img.height, img.width)
        if chip_size is not None and (chip_size > row1 - row0 or chip_size > col1 - col0):
            where = f"the region {list(region)} of" if region is not None else "image"
            raise GeosegError(
                f"data.chip_size={chip_size} is larger than {where} '{image}' "
                f"({col1 - col0}x{row1 - row0} px); lower data.chip_size or drop this scene."
            )
        label_on_grid = False
        lab_nodata = label_nodata
        label_values, label_dtype = None, None
        if label is not None:
            with open_raster(label, "label") as lab:
                check_readable(lab, label, "label")
                if lab.crs is None:
                    raise GeosegError(
                        f"label '{label}' has no CRS; assign one or write it on the image grid."
                    )
                _check_overlap(img, lab, image, label)
                if lab_nodata is None:
                    lab_nodata = lab.nodata
                if unknown_labels == "error" and class_codes:
                    label_values = check_label_values(lab, class_codes, lab_nodata, label)
                label_dtype = lab.dtypes[0]
                label_on_grid = (
                    lab.crs == img.crs
                    and lab.shape == img.shape
                    and lab.transform.almost_equals(img.transform, precision=1e-9)
                )
        return Scene(
            image=str(image),
            label=None if label is None else str(label),
            bands=band_idx,
            nodata=img.nodata if nodata is None else nodata,
            label_nodata=lab_nodata,
            height=img.height,
            width=img.width,
            label_on_grid=label_on_grid,
            dtype=img.dtypes[0],
            region=px_region,
            label_dtype=label_dtype,
            label_values=label_values,
            block=tuple(img.block_shapes[0]),
        )


def region_pixels(
    region: Sequence[float] | None, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """(row0, col0, row1, col1) of a (left, top, right, bottom) fractional region, checked."""
    if region is None:
        return None
    if len(region) != 4 or not all(0.0 <= float(v) <= 1.0 for v in region):
        raise GeosegError(
            f"a split's region must be [left, top, right, bottom] fractions in [0, 1], got {region}."
        )
    left, top, right, bottom = (float(v) for v in region)
    if left >= right or top >= bottom:
        raise GeosegError(f"a split's region needs left < right and top < bottom, got {list(region)}.")
    return round(top * height), round(left * width), round(bottom * height), round(right * width)


def _label_for(image: str, template: str | None, root: str) -> str | None:
    if template is None:
        return None
    p = Path(image)
    name = template.format(stem=p.stem, name=p.name, parent=str(p.parent))
    return name if os.path.isabs(name) else os.path.join(root, name)


def find_scene_files(root: str, images: str, labels: str | None) -> list[tuple[str, str | None]]:
    """Glob ``images`` under ``root`` and pair each with ``labels`` formatted with ``{stem}``/``{name}``."""
    pattern = images if os.path.isabs(images) else os.path.join(root, images)
    found = sorted(glob.glob(pattern, recursive=True))
    if not found:
        raise GeosegError(f"no image matches '{pattern}'; check data.root and the split's images pattern.")
    return [(path, _label_for(path, labels, root)) for path in found]


def read_manifest(path: str, split: str) -> list[tuple[str, str | None]]:
    """Rows of a CSV manifest (columns ``image``, optional ``label`` and ``split``) for one split."""
    if not os.path.exists(path):
        raise GeosegError(f"data.manifest not found: '{path}'.")
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0]:
        raise GeosegError(f"manifest '{path}' needs a header with an 'image' column (and 'label', 'split').")
    out = []
    for row in rows:
        if row.get("split", split) != split:
            continue
        label = row.get("label") or None
        out.append((os.path.join(base, row["image"]), None if label is None else os.path.join(base, label)))
    if not out:
        raise GeosegError(f"manifest '{path}' has no rows for split '{split}'.")
    return out
