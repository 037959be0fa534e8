"""Scenes: image file(s), an optional label raster, a band list and nodata, checked at start-up."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio

from geoseg.data.band_files import FileEntry
from geoseg.data.label_checks import (
    check_label_nodata,
    check_label_overlap,
    check_label_values,
    check_vector_codes,
    warn_partial_label,
)
from geoseg.data.raster_kind import is_probabilities
from geoseg.data.rasters import check_readable, open_raster, unreadable
from geoseg.data.scene_paths import scene_name
from geoseg.data.series_scene import DateMask, DateReader, SeriesDate
from geoseg.data.stack import Grid, SceneFile, inspect_stack, stack_dtype
from geoseg.data.stack_reader import StackReader
from geoseg.data.vector_labels import VectorLabels, VectorOptions, check_vector_label, is_vector
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)

__all__ = ["Scene", "check_readable", "inspect_scene", "open_raster", "resolve_bands", "unreadable"]


@dataclass(frozen=True)
class Scene:
    """One scene (image files and optional label) with everything the chip reader needs, resolved once.

    ``image`` is its first file; ``files`` are all of them in stack order (empty = ``image`` alone, read
    as it is); ``bands`` are the selected 1-based indices into the stack of every file's bands.
    """

    image: str
    label: str | None
    bands: tuple[int, ...]
    nodata: float | None  # the selected bands' common nodata (None when they have none or differ)
    label_nodata: float | None
    height: int
    width: int
    label_on_grid: bool
    dtype: str = "uint16"  # the stack dtype (see stack_dtype)
    region: tuple[int, int, int, int] | None = None  # (row0, col0, row1, col1) in px; None = whole scene
    label_dtype: str | None = None
    label_values: tuple[float, ...] | None = None  # distinct label values, when checked at start-up
    block: tuple[int, int] | None = None  # (rows, cols) of the reference file's blocks (tiles or strips)
    files: tuple[SceneFile, ...] = ()
    grid: Grid | None = None  # the reference grid; None = the image's own
    band_names: tuple[str | None, ...] = ()  # of every stacked band
    invalid: str = "any"  # data.invalid: a pixel is invalid where any | all selected bands are nodata
    file_key: str | None = None  # the {file} value of the first file (multi-file scenes)
    vector: VectorOptions | None = None  # data.vector, when the label is a vector file
    index_key: str | None = None  # its entry in the scene index (geoseg.data.scene_index), when cached
    title: str | None = None  # its name when its files do not give one (a STAC item's id)
    dates: tuple[SeriesDate, ...] = ()  # a series scene's dates in time order (the first is image/files)
    date_mask: DateMask | None = None  # one date's mask (data.series.mask), in a scene of date_scenes()
    min_valid_dates: int = 1  # a series pixel is used where at least this many dates are valid

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
        return self.title or scene_name(self.image, self.file_key)

    @property
    def stack(self) -> tuple[SceneFile, ...]:
        """The scene's files; a scene built without them is its image, bands 1..max(bands), one nodata."""
        if self.files:
            return self.files
        count = max(self.bands)
        return (SceneFile(self.image, None, tuple(range(1, count + 1)), (self.nodata,) * count, self.dtype),)

    @property
    def band_nodata(self) -> tuple[float | None, ...]:
        """Nodata of each selected band."""
        flat = [v for f in self.stack for v in f.nodata]
        return tuple(flat[k - 1] for k in self.bands)

    @property
    def selected_band_names(self) -> list[str | None]:
        """The name of each selected band (its description, or a file's name), None where unnamed."""
        return [self.band_names[b - 1] if b <= len(self.band_names) else None for b in self.bands]

    @property
    def is_series(self) -> bool:
        return bool(self.dates)

    def reader(self) -> StackReader | DateReader:
        """A reader of this scene's selected bands on its reference grid (open one per process); of
        its first date for a series scene (see :meth:`date_readers`)."""
        if self.dates:
            return self.date_readers()[0]
        if self.date_mask is not None:
            return DateReader(SeriesDate("", None, self.stack, self.date_mask), self.bands, self.grid,
                              self.invalid, self.name)  # fmt: skip
        return StackReader(self.stack, self.bands, self.grid, self.invalid, self.name)

    def date_readers(self) -> list[DateReader]:
        """A reader per date of a series scene, each onto the scene's reference grid."""
        return [DateReader(d, self.bands, self.grid, self.invalid, self.name) for d in self.dates]

    def date_scenes(self) -> list[Scene]:
        """Each date of a series scene as a scene of its own (with its mask); ``[self]`` otherwise."""
        if not self.dates:
            return [self]
        return [
            dataclasses.replace(self, image=d.files[0].path, files=d.files, dates=(), date_mask=d.mask,
                                title=f"{self.name} {d.label}", index_key=None)
            for d in self.dates
        ]  # fmt: skip


def scene_files(scenes: Sequence[Scene]) -> list[str]:
    """Every file the scenes read (images, each stacked file, each date's files and mask, labels): what
    no output may replace."""
    paths = [
        p for s in scenes
        for p in (s.image, s.label, *(f.path for f in s.files),
                  *(f.path for d in s.dates for f in d.files), *(d.mask.file.path for d in s.dates if d.mask))
        if p
    ]  # fmt: skip
    return list(dict.fromkeys(paths))


def scene_grid(scene: Scene) -> Grid:
    """The reference grid of ``scene`` (its image's grid for scenes built without one)."""
    if scene.grid is not None:
        return scene.grid
    with rasterio.open(scene.image) as src:
        return Grid.of(src)


def resolve_bands(
    names: Sequence[str | None], bands: Sequence[int | str] | None, path: str,
    aliases: dict[str, int] | None = None,
) -> tuple[int, ...]:  # fmt: skip
    """Turn 1-based indices or band names into 1-based stack indices, checking the range.

    ``aliases`` are further names (``<file>:<index>``) of multi-file stacks.
    """
    count = len(names)
    if bands is None:
        return tuple(range(1, count + 1))
    table = dict(aliases or {})
    shown = [n for n in names if n]
    out = []
    for band in bands:
        if isinstance(band, str) and not band.lstrip("-").isdigit():
            hits = [i + 1 for i, n in enumerate(names) if n == band]
            if len(hits) > 1:
                raise GeosegError(
                    f"data.bands: band name '{band}' is ambiguous in '{path}' (stack bands {hits}); "
                    "select it by stack index or as <file>:<index>."
                )
            if not hits and band not in table:
                raise GeosegError(
                    f"data.bands: band '{band}' is not a band name of '{path}' (names: {shown}); "
                    "use 1-based indices or one of those names."
                )
            out.append(hits[0] if hits else table[band])
            continue
        index = int(band)
        if not 1 <= index <= count:
            raise GeosegError(
                f"data.bands: band index {index} is out of range for '{path}', which has {count} bands "
                f"(indices are 1-based: 1..{count})."
            )
        out.append(index)
    return tuple(out)


def _aliases(files: Sequence[SceneFile]) -> dict[str, int]:
    """``<file>:<index>`` names of every stacked band of a multi-file scene."""
    out, k = {}, 0
    for f in files:
        for b in f.bands:
            k += 1
            if f.name is not None:
                out[f"{f.name}:{b}"] = k
    return out


def common_nodata(values: Sequence[float | None]) -> float | None:
    """The one nodata value ``values`` share, else None."""
    keys = {repr(v) for v in values}
    return values[0] if len(keys) == 1 else None


def inspect_scene(
    image: str | Sequence[str],
    label: str | None,
    bands: Sequence[int | str] | None = None,
    nodata: float | Sequence[float | None] | None = None,
    label_nodata: float | None = None,
    class_codes: Sequence[int] = (),
    chip_size: int | None = None,
    unknown_labels: str = "error",
    region: Sequence[float] | None = None,
    files: Sequence[FileEntry] | None = None,
    grid: str = "finest",
    invalid: str = "any",
    require_crs: bool = True,
    role: tuple[str, str] = ("image", "the data.* options"),
    vector: VectorOptions | None = None,
) -> Scene:
    """Open and validate one scene; every problem becomes a one-line :class:`GeosegError`.

    ``image`` is one file, or one file per ``files`` entry (a scene whose bands are in several files).
    ``region`` = (left, top, right, bottom) as fractions of the scene restricts the split to that
    part of it, e.g. ``[0, 0, 0.75, 1]`` for training and ``[0.75, 0, 1, 1]`` for validation.
    """
    paths = (str(image),) if isinstance(image, (str, os.PathLike)) else tuple(str(p) for p in image)
    stack = inspect_stack(paths, files, nodata, grid, require_crs, *role)
    first = paths[0]
    shown = first if len(paths) == 1 else f"{first} (+{len(paths) - 1} files)"
    band_idx = resolve_bands(stack.names, bands, shown, _aliases(stack.files))
    ref = stack.grid
    px_region = region_pixels(region, ref.height, ref.width)
    row0, col0, row1, col1 = px_region or (0, 0, ref.height, ref.width)
    if chip_size is not None and (chip_size > row1 - row0 or chip_size > col1 - col0):
        where = f"the region {list(region)} of" if region is not None else "image"
        raise GeosegError(
            f"data.chip_size={chip_size} is larger than {where} '{first}' "
            f"({col1 - col0}x{row1 - row0} px); lower data.chip_size or drop this scene."
        )
    label_on_grid = False
    lab_nodata = label_nodata
    label_values, label_dtype = None, None
    vector_opts = None
    if label is not None and is_vector(label):
        vector_opts = vector or VectorOptions()
        features = VectorLabels(label, vector_opts, ref)
        check_vector_label(features, first)
        label_values = check_vector_codes(features, class_codes, unknown_labels)
        label_dtype, label_on_grid = features.dtypes[0], True
    elif label is not None:
        with open_raster(label, "label") as lab:
            check_readable(lab, label, "label")
            if is_probabilities(lab.tags()):
                raise GeosegError(
                    f"label '{label}' is a probabilities raster written by geoseg predict, not labels of "
                    "class codes; pass the ground-truth label file"
                )
            if lab.crs is None:
                raise GeosegError(f"label '{label}' has no CRS; assign one or write it on the image grid.")
            check_label_overlap(ref, lab, first, label)
            warn_partial_label(Grid.of(lab), ref, px_region, label, first)
            if lab.count > 1:
                log.warning("label '%s' has %d bands; only band 1 is read as class codes", label, lab.count)
            if lab_nodata is None:
                lab_nodata = lab.nodata
            check_label_nodata(lab_nodata, class_codes, label, declared=label_nodata is None)
            if unknown_labels == "error" and class_codes:
                label_values = check_label_values(lab, class_codes, lab_nodata, label)
            label_dtype = lab.dtypes[0]
            label_on_grid = Grid.of(lab).same_as(ref)
    flat = [v for f in stack.files for v in f.nodata]
    used = {p for k in band_idx for p in [_owner(stack.files, k)]}
    return Scene(
        image=first,
        label=None if label is None else str(label),
        bands=band_idx,
        nodata=common_nodata([flat[k - 1] for k in band_idx]),
        label_nodata=lab_nodata,
        height=ref.height,
        width=ref.width,
        label_on_grid=label_on_grid,
        dtype=stack_dtype([stack.files[i].dtype for i in sorted(used)]),
        region=px_region,
        label_dtype=label_dtype,
        label_values=label_values,
        block=stack.block,
        files=stack.files,
        grid=ref,
        band_names=stack.names,
        invalid=invalid,
        file_key=files[0].name if files else None,
        vector=vector_opts,
    )


def _owner(files: Sequence[SceneFile], k: int) -> int:
    """Index of the file that holds 1-based stack band ``k``."""
    for i, f in enumerate(files):
        if k <= len(f.bands):
            return i
        k -= len(f.bands)
    raise IndexError(k)


def region_pixels(
    region: Sequence[float] | None, height: int, width: int, option: str = "a split's region"
) -> tuple[int, int, int, int] | None:
    """(row0, col0, row1, col1) of a (left, top, right, bottom) fractional region, checked; errors
    name ``option``."""
    if region is None:
        return None
    try:
        fractions = [float(v) for v in region]
    except (TypeError, ValueError):
        fractions = []
    if len(fractions) != 4 or not all(0.0 <= v <= 1.0 for v in fractions):
        raise GeosegError(f"{option} must be [left, top, right, bottom] fractions in [0, 1], got {region}.")
    left, top, right, bottom = fractions
    if left >= right or top >= bottom:
        raise GeosegError(f"{option} needs left < right and top < bottom, got {list(region)}.")
    return round(top * height), round(left * width), round(bottom * height), round(right * width)
