"""A scene's band stack: its files, the reference grid they are read onto, and the checks of both.

Every file of a scene is inspected once at start-up into a :class:`SceneFile` (which bands it gives,
their nodata values, its dtype, whether it lies on the reference grid). The reference grid is the
finest file's (``data.grid=finest``), the first file's (``first``) or a named file's. Files on
another grid are resampled per chip window by :class:`~geoseg.data.stack_reader.StackReader`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.warp import transform_bounds

from geoseg.data.band_files import FileEntry
from geoseg.data.rasters import check_readable, open_raster
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS (as WKT), affine transform and size. Plain values, so it pickles cheaply."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int

    @classmethod
    def of(cls, src: rasterio.DatasetReader) -> Grid:
        return cls(src.crs.to_wkt() if src.crs else "", tuple(src.transform)[:6], src.height, src.width)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def rio_crs(self) -> CRS | None:
        return CRS.from_wkt(self.crs) if self.crs else None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        a = self.affine
        xs = [a.c, a.c + a.a * self.width + a.b * self.height]
        ys = [a.f, a.f + a.d * self.width + a.e * self.height]
        return min(xs), min(ys), max(xs), max(ys)

    def same_as(self, other: Grid) -> bool:
        return (
            (self.height, self.width) == (other.height, other.width)
            and self.affine.almost_equals(other.affine, precision=1e-9)
            and self.rio_crs == other.rio_crs
        )


@dataclass(frozen=True)
class SceneFile:
    """One file of a scene's stack, as inspected at start-up."""

    path: str
    name: str | None  # its data.files value; None for a single-file scene
    bands: tuple[int, ...]  # 1-based bands of the file that join the stack, in order
    nodata: tuple[float | None, ...]  # per band in ``bands``: entry override, data.nodata, else the file's
    dtype: str
    resampling: str = "bilinear"
    on_grid: bool = True  # same CRS, transform and size as the reference grid: read without resampling
    grid: Grid | None = None
    masked: bool = False  # GDAL mask band (internal/sidecar per-dataset mask, or alpha): 0 = invalid


def has_mask_band(src: rasterio.DatasetReader, bands: Sequence[int]) -> bool:
    """Whether ``bands`` have a real GDAL mask (a per-dataset mask or an alpha band), which marks invalid
    pixels besides (or instead of) a nodata value."""
    return any(
        MaskFlags.per_dataset in src.mask_flag_enums[b - 1] or MaskFlags.alpha in src.mask_flag_enums[b - 1]
        for b in bands
    )


def stack_dtype(dtypes: Sequence[str]) -> str:
    """The smallest dtype that holds every file's values (int16 + float32 -> float32, u8 + u16 -> u16)."""
    return np.result_type(*[np.dtype(d) for d in dtypes]).name


def file_bands(
    src: rasterio.DatasetReader, entry: FileEntry | None, path: str, index: int
) -> tuple[int, ...]:
    """The 1-based bands of ``src`` that ``entry`` stacks (all by default), checked against its band count."""
    if entry is None or entry.bands is None:
        return tuple(range(1, src.count + 1))
    bad = [b for b in entry.bands if not 1 <= b <= src.count]
    if bad:
        raise GeosegError(
            f"data.files[{index}] ({entry.name}): band {bad[0]} is out of range for '{path}', which has "
            f"{src.count} band{'s' if src.count != 1 else ''} (1-based: 1..{src.count}); fix its bands list."
        )
    return entry.bands


def check_one_dtype(src: rasterio.DatasetReader, bands: Sequence[int], path: str) -> str:
    """The dtype of ``bands``; one line when they differ (a VRT that mixes dtypes)."""
    kinds = sorted({src.dtypes[b - 1] for b in bands})
    if any(np.dtype(k).kind == "c" for k in kinds):  # the model would silently see only the real part
        raise GeosegError(
            f"'{path}' has complex bands ({', '.join(kinds)}, e.g. SAR SLC); geoseg reads real values: "
            "convert it to amplitude or intensity first (e.g. a VRT with PixelFunctionType mod or intensity)."
        )
    if len(kinds) > 1:
        raise GeosegError(
            f"'{path}' mixes band dtypes ({', '.join(kinds)}); rasterio reads one dtype per file, so list "
            "the bands of each dtype as separate data.files entries (with bands: [...]) or rewrite it "
            "with one dtype (gdal_translate -ot Float32)."
        )
    return kinds[0]


def band_nodata(
    declared: Sequence[float | None], entry: FileEntry | None, override: float | Sequence[float | None] | None
) -> tuple[float | None, ...]:
    """Nodata per stacked band of one file: the entry's value, else ``data.nodata`` (one value, or one per
    band of this file), else what the file declares for each band (``declared``)."""
    if entry is not None and entry.nodata is not None:
        return tuple(float(entry.nodata) for _ in declared)
    if isinstance(override, Sequence):
        return tuple(None if v is None else float(v) for v in override)
    if override is not None:
        return tuple(float(override) for _ in declared)
    return tuple(None if v is None else float(v) for v in declared)


def band_names(
    src: rasterio.DatasetReader, bands: Sequence[int], entry: FileEntry | None
) -> list[str | None]:
    """Names of stacked bands: the band description, else ``<file>`` (one-band file) or ``<file>:<index>``."""
    out: list[str | None] = []
    for b in bands:
        desc = src.descriptions[b - 1]
        if desc:
            out.append(desc)
        elif entry is None:
            out.append(None)
        else:
            out.append(entry.name if src.count == 1 else f"{entry.name}:{b}")
    return out


def pixel_area(grid: Grid, crs: CRS) -> float:
    """Area of one pixel of ``grid`` measured in ``crs`` units, to compare resolutions across CRSs."""
    left, bottom, right, top = transform_bounds(grid.rio_crs, crs, *grid.bounds)
    return abs((right - left) * (top - bottom)) / (grid.width * grid.height)


def reference_index(grids: Sequence[Grid], names: Sequence[str | None], rule: str) -> int:
    """Which file's grid the stack is read onto (``data.grid``): finest | first | a file name."""
    if rule == "first" or len(grids) == 1:
        return 0
    if rule != "finest":
        return list(names).index(rule)
    crs = grids[0].rio_crs
    areas = [pixel_area(g, crs) for g in grids]
    return min(range(len(grids)), key=lambda i: (round(areas[i] / areas[0], 9), i))


def overlaps(grid: Grid, ref: Grid) -> bool:
    """Whether ``grid``'s footprint, moved to ``ref``'s CRS, overlaps ``ref``'s."""
    left, bottom, right, top = transform_bounds(grid.rio_crs, ref.rio_crs, *grid.bounds)
    rl, rb, rr, rt = ref.bounds
    return not (left >= rr or right <= rl or bottom >= rt or top <= rb)


def check_overlap(file_grid: Grid, ref: Grid, path: str, ref_path: str, rule: str) -> None:
    """One line when a file does not overlap the reference grid at all."""
    if not overlaps(file_grid, ref):
        raise GeosegError(
            f"file '{path}' does not overlap the reference grid of '{ref_path}' (data.grid={rule}); check "
            "that it belongs to this scene and that both CRSs are right, or choose another data.grid."
        )


@dataclass(frozen=True)
class Stack:
    """What :func:`inspect_stack` found: the files, the reference grid, and each stacked band's name."""

    files: tuple[SceneFile, ...]
    grid: Grid
    names: tuple[str | None, ...]
    block: tuple[int, int]  # internal blocks of the reference file
    reference: str  # the file whose grid the stack is read onto


def inspect_stack(
    paths: Sequence[str], entries: Sequence[FileEntry] | None,
    nodata: float | Sequence[float | None] | None, rule: str = "finest", require_crs: bool = True,
    what: str = "image", options: str = "the data.* options",
) -> Stack:  # fmt: skip
    """Open every file of a scene once: readable, georeferenced, its bands, dtype, nodata and grid.

    ``nodata`` (``data.nodata``) is one value for every band, or one per stacked band in stack order.
    ``require_crs=False`` lets a lone file without a CRS through (predict writes its output without one).
    ``what`` and ``options`` name the files and the options that chose them in the messages.
    """
    per_band = list(nodata) if isinstance(nodata, Sequence) else None
    if entries is not None and len(entries) != len(paths):
        raise GeosegError(f"{len(paths)} image files for {len(entries)} data.files entries: {list(paths)}.")
    found: list[tuple[SceneFile, Grid, tuple[int, int]]] = []
    names: list[str | None] = []
    for i, path in enumerate(paths):
        entry = entries[i] if entries is not None else None
        with open_raster(path, what, options) as src:
            check_readable(src, path, what)
            if src.crs is None and (require_crs or len(paths) > 1):
                raise GeosegError(no_crs_message(src, path, what))
            bands = file_bands(src, entry, path, i)
            dtype = check_one_dtype(src, bands, path)
            declared = tuple(src.nodatavals[b - 1] for b in bands)
            masked = has_mask_band(src, bands)
            names += band_names(src, bands, entry)
            grid = Grid.of(src)
            file = SceneFile(str(path), entry.name if entry else None, bands, declared, dtype,
                             entry.resampling if entry else "nearest", masked=masked)  # fmt: skip
            found.append((file, grid, tuple(src.block_shapes[0])))
    if per_band is not None and len(per_band) != len(names):
        raise GeosegError(_nodata_count(per_band, paths, len(names)))
    offset = 0
    for i, (file, grid, block) in enumerate(found):
        entry = entries[i] if entries is not None else None
        n = len(file.bands)
        override = per_band[offset : offset + n] if per_band is not None else nodata
        values = band_nodata(file.nodata, entry, override)
        file = SceneFile(file.path, file.name, file.bands, values, file.dtype, file.resampling,
                         masked=file.masked)  # fmt: skip
        found[i] = (file, grid, block)
        offset += n
    grids = [g for _, g, _ in found]
    ref = reference_index(grids, [e.name for e in entries] if entries else [None] * len(paths), rule)
    ref_grid = grids[ref]
    files = []
    for (file, grid, _), path in zip(found, paths, strict=True):
        on_grid = grid.same_as(ref_grid)
        if not on_grid:
            check_overlap(grid, ref_grid, path, paths[ref], rule)
        if file.masked and not on_grid:
            log.warning("the mask band of '%s' is not applied: it is resampled onto the reference grid; "
                        "declare a nodata value for it instead (data.files[...].nodata)", path)  # fmt: skip
        files.append(SceneFile(file.path, file.name, file.bands, file.nodata, file.dtype, file.resampling,
                               on_grid, grid, file.masked and on_grid))  # fmt: skip
    return Stack(tuple(files), ref_grid, tuple(names), found[ref][2], str(paths[ref]))


def pixel_georeference(src: rasterio.DatasetReader) -> str | None:
    """How a file without a geotransform is georeferenced: ``"GCPs"``, ``"RPCs"`` or None."""
    if src.gcps[0]:
        return "GCPs"
    return "RPCs" if src.rpcs is not None else None


def no_crs_message(src: rasterio.DatasetReader, path: str, what: str) -> str:
    """One line for a file without a CRS: assign one, or warp a GCP/RPC-georeferenced file onto a grid."""
    kind = pixel_georeference(src)
    if kind is not None:
        rpc = " -rpc" if kind == "RPCs" else ""
        return (
            f"{what} '{path}' is georeferenced by {kind}, not a map grid; warp it onto one first "
            f"(gdalwarp{rpc} -t_srs EPSG:xxxx in.tif out.tif)."
        )
    return f"{what} '{path}' has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx)."


def _nodata_count(values: Sequence, paths: Sequence[str], total: int) -> str:
    more = f" (+{len(paths) - 1} files)" if len(paths) > 1 else ""
    return (
        f"data.nodata lists {len(values)} values but the stack of '{paths[0]}'{more} has {total} bands; "
        "give one value per stacked band, or a single value for every band."
    )
