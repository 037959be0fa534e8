"""Vector labels: polygons read and indexed once per scene, rasterised per chip onto the scene's grid.

A label path ending in ``.geojson``, ``.json``, ``.gpkg``, ``.shp`` or ``.fgb`` (anything GDAL/OGR
reads, through pyogrio) is a vector label. Its features are loaded once, reprojected once to the
scene's CRS, repaired (``make_valid``) and put in a shapely ``STRtree``; a chip costs a bounding-box
query and a ``rasterio.features.rasterize`` of the hits onto the chip's own grid. Each feature burns
its ``data.vector.field`` value (a class code, mapped through ``data.classes`` like raster codes) or
``burn``; pixels outside every feature get ``background``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyogrio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.warp import transform as transform_xy
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.data.remote import file_name, is_remote, remote_cause, shown
from geoseg.data.stack import Grid
from geoseg.errors import GeosegError, first_line

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb")
OPTION_KEYS = ("field", "burn", "background", "all_touched", "layer")
_WARNED_WITHOUT_GEOMETRY: set[tuple] = set()  # (file, layer, mtime) whose count was logged in this process


def is_vector(path: str | None) -> bool:
    """Whether a label path names a vector file (by its suffix)."""
    return path is not None and file_name(str(path)).lower().endswith(VECTOR_SUFFIXES)


@dataclass(frozen=True)
class VectorOptions:
    """``data.vector``: how features become label pixels."""

    field: str | None = None  # attribute holding the class code; None = every feature burns ``burn``
    burn: int = 1
    background: int = 0  # code of pixels outside every feature
    all_touched: bool = False  # burn every pixel a feature touches, not only those whose centre it covers
    layer: str | int | None = None  # layer of a multi-layer file (GeoPackage); None = the first

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | None) -> VectorOptions:
        value = dict(value or {})
        unknown = sorted(set(value) - set(OPTION_KEYS))
        if unknown:
            raise GeosegError(f"data.vector has unknown keys {unknown}; use {list(OPTION_KEYS)}.")
        opts = cls(**{k: v for k, v in value.items() if v is not None or k in ("field", "layer")})
        for key in ("burn", "background"):
            v = getattr(opts, key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise GeosegError(f"data.vector.{key} must be a whole-number class code, got {v!r}.")
        if not isinstance(opts.all_touched, bool):
            raise GeosegError(f"data.vector.all_touched must be true or false, got {opts.all_touched!r}.")
        if opts.field is not None and not isinstance(opts.field, str):
            raise GeosegError(f"data.vector.field must be an attribute name or null, got {opts.field!r}.")
        return opts


class MissingField(GeosegError):
    """A vector label with features but without ``data.vector.field``."""

    def __init__(self, path: str, field: str, fields: list[str]) -> None:
        self.path, self.field, self.fields = path, field, fields
        super().__init__(
            f"vector label '{path}' has no field '{field}' (its fields: {fields}); add it to this file, or "
            "set data.vector.field to the field that holds the class codes in every label file."
        )


def declares_field(path: str, field: str, layer: str | int | None) -> bool:
    """Whether the vector file ``path`` declares ``field`` (False when it cannot be read)."""
    try:
        return field in list(pyogrio.read_info(path, layer=layer)["fields"])
    except Exception:  # pyogrio's errors: that file's own check names them
        return False


def _codes_dtype(codes: np.ndarray) -> str:
    for dtype in ("uint8", "uint16", "int16", "int32"):
        info = np.iinfo(dtype)
        if codes.size == 0 or (info.min <= codes.min() and codes.max() <= info.max):
            return dtype
    raise GeosegError(f"vector label codes {codes.min()}..{codes.max()} do not fit a 32-bit integer.")


def _reproject(geoms: np.ndarray, src: CRS, dst: CRS) -> np.ndarray:
    """Every coordinate of ``geoms`` from ``src`` to ``dst`` in one vectorised call."""

    def move(xy: np.ndarray) -> np.ndarray:
        xs, ys = transform_xy(src, dst, xy[:, 0], xy[:, 1])
        return np.column_stack([xs, ys])

    return shapely.transform(geoms, move)


class VectorLabels:
    """A scene's label features on its grid, with ``read`` like a one-band rasterio dataset."""

    def __init__(self, path: str, options: VectorOptions, grid: Grid, warn: bool = True) -> None:
        """``warn=False`` for a reopen after the start-up check, which has told the user already."""
        self.path, self.options, self.grid = str(path), options, grid
        self.geoms, self.values, self.info = _load(self.path, options, grid, warn)
        codes = np.unique(np.append(self.values, options.background)).astype(np.int64)
        self.codes = codes
        self.dtypes = (_codes_dtype(codes),)
        self.nodata = None
        self._index()

    def _index(self) -> None:
        """The spatial index, and each feature as a GeoJSON-like mapping built once: rasterize() would
        otherwise build it from the shapely geometry on every chip (over half the cost per chip)."""
        self.tree = shapely.STRtree(self.geoms)
        self.shapes = [(g.__geo_interface__, int(v)) for g, v in zip(self.geoms, self.values, strict=True)]

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    def read(self, band: int = 1, window: Window | None = None, out: np.ndarray | None = None,
             out_shape: tuple[int, int] | None = None, **_: Any) -> np.ndarray:  # fmt: skip
        """The label codes of ``window`` (or the whole grid at ``out_shape``), rasterised now."""
        if window is not None:
            shape = (int(window.height), int(window.width))
            transform = window_transform(window, self.grid.affine)
        else:
            shape = tuple(out_shape[-2:]) if out_shape is not None else (self.grid.height, self.grid.width)
            transform = self.grid.affine * Affine.scale(
                self.grid.width / shape[1], self.grid.height / shape[0]
            )
        left, top = transform * (0, 0)
        right, bottom = transform * (shape[1], shape[0])
        hits = self.tree.query(
            shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        )
        dtype = self.dtypes[0] if out is None else out.dtype
        if out is None:
            out = np.empty(shape, dtype=dtype)
        out.fill(self.options.background)
        if len(hits):
            pairs = zip(self.geoms[hits].tolist(), self.values[hits].tolist(), strict=True)
            rasterize(
                pairs, out_shape=shape, transform=transform, out=out, all_touched=self.options.all_touched
            )
        return out

    def close(self) -> None:
        """Nothing to close: the features live in memory."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("tree")
        state.pop("shapes")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._index()


def _load(
    path: str, opts: VectorOptions, grid: Grid, warn: bool = True
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read, check, repair and reproject the features of ``path`` near the scene: (geometries, codes,
    the layer's info from pyogrio). ``warn``: log skipped, repaired and non-polygon features."""
    if not is_remote(path) and not os.path.exists(path):
        raise GeosegError(f"label file not found: '{path}'. Check the path or the split's labels template.")
    try:
        info = pyogrio.read_info(path, layer=opts.layer)
        has_field = opts.field is not None and opts.field in list(info["fields"])
        if opts.field is not None and not has_field and info.get("features") != 0:
            raise MissingField(path, opts.field, list(info["fields"]))
        columns = [opts.field] if has_field else []  # a file without features may list no fields (GeoJSON)
        bbox = _scene_bbox(info, grid)
        meta, fids, wkb, data = pyogrio.raw.read(
            path, layer=opts.layer, columns=columns, return_fids=True, bbox=bbox
        )
    except GeosegError:
        raise
    except Exception as err:  # pyogrio's DataSourceError, DataLayerError, ...
        if is_remote(path):
            raise GeosegError(
                f"cannot read vector label '{shown(path)}' ({remote_cause(str(err))})."
            ) from None
        raise GeosegError(
            f"cannot read vector label '{path}' ({first_line(err)}); check that it is a complete "
            "GeoJSON/GeoPackage/Shapefile/FlatGeobuf (and data.vector.layer)."
        ) from None
    if meta.get("crs") is None:
        raise GeosegError(f"vector label '{path}' has no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:xxxx).")
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    values = np.full(len(geoms), opts.burn, dtype=np.int64)
    if has_field:
        raw = np.asarray(data[0])
        try:
            as_float = raw.astype(np.float64)
        except (TypeError, ValueError):
            bad = next(v for v in raw if not _is_number(v))
            raise GeosegError(
                f"vector label '{path}': field '{opts.field}' holds {bad!r}, not a class code; "
                "use a field of integer codes (map names to codes in the file first)."
            ) from None
        whole = np.isfinite(as_float) & (as_float == np.round(as_float))
        if not whole.all():
            k = int(np.flatnonzero(~whole)[0])
            value = raw[k].item() if isinstance(raw[k], np.generic) else raw[k]
            raise GeosegError(
                f"vector label '{path}': feature {fids[k]} has {opts.field}={value!r}, not a whole-number "
                "class code; fix it in the file."
            )
        values = as_float.astype(np.int64)
    missing, empty = shapely.is_missing(geoms), shapely.is_empty(geoms)
    keep = ~(missing | empty)
    if warn:
        warn_not_polygons(path, geoms[keep], np.asarray(fids)[keep])
        warn_without_geometry(path, info, np.asarray(fids)[missing] if bbox is None else None)
    if warn and empty.any():
        log.warning("vector label '%s': %d feature(s) with an empty geometry skipped (e.g. feature %s)",
                    path, int(empty.sum()), fids[np.flatnonzero(empty)[0]])  # fmt: skip
    geoms, values, fids = geoms[keep], values[keep], np.asarray(fids)[keep]
    bad = ~shapely.is_valid(geoms)
    if warn and bad.any():
        log.warning("vector label '%s': %d invalid geometr%s repaired with make_valid (e.g. feature %s: %s)",
                    path, int(bad.sum()), "y" if bad.sum() == 1 else "ies", fids[np.flatnonzero(bad)[0]],
                    shapely.is_valid_reason(geoms[np.flatnonzero(bad)[0]]))  # fmt: skip
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    src_crs, dst_crs = CRS.from_user_input(meta["crs"]), grid.rio_crs
    if len(geoms) and dst_crs is not None and src_crs != dst_crs:
        geoms = _reproject(geoms, src_crs, dst_crs)
    return geoms, values, info


def warn_without_geometry(path: str, info: dict, read: np.ndarray | None) -> None:
    """Warn once per file how many features have no geometry (they label no pixel). A read limited to
    the scene's footprint never returns them, so they are counted over the whole layer; ``read``: the
    fids of those the scene's read returned, when it was not limited."""
    key = (path, info.get("layer_name"), None) if is_remote(path) else (
        os.path.abspath(path), info.get("layer_name"), os.stat(path).st_mtime_ns)  # fmt: skip
    if key in _WARNED_WITHOUT_GEOMETRY:
        return
    _WARNED_WITHOUT_GEOMETRY.add(key)
    fids = read if read is not None else _fids_without_geometry(path, str(info.get("layer_name")))
    if len(fids):
        log.warning("vector label '%s': %d feature(s) without geometry skipped (e.g. feature %s)", path,
                    len(fids), fids[0])  # fmt: skip


def _fids_without_geometry(path: str, layer: str) -> np.ndarray:
    """The fids of ``layer``'s features whose geometry is null (OGR SQL works on every driver)."""
    name = layer.replace('"', '""')
    sql = f'SELECT FID FROM "{name}" WHERE OGR_GEOMETRY IS NULL'
    try:
        _, fids, _, _ = pyogrio.raw.read(
            path, sql=sql, sql_dialect="OGRSQL", read_geometry=False, columns=[], return_fids=True
        )
    except Exception as err:  # pyogrio's errors; the features themselves were read
        log.warning("vector label '%s': cannot count its features without geometry (%s); any are skipped",
                    path, first_line(err))  # fmt: skip
        return np.empty(0, np.int64)
    return np.asarray(fids)


def warn_not_polygons(path: str, geoms: np.ndarray, fids: np.ndarray) -> None:
    """Points and lines label only the pixels they touch: almost always a layer that needs buffering
    (road centre lines, well locations) before it can label an area class."""
    kinds = shapely.get_type_id(geoms)
    thin = np.flatnonzero(np.isin(kinds, (0, 1, 2, 4, 5)))  # (multi)points, (multi)lines, rings
    if thin.size:
        k = int(thin[0])
        log.warning("vector label '%s': %d of %d features are points or lines (e.g. feature %s, a %s); they "
                    "label only the pixels they touch: buffer them into polygons first for an area class "
                    "(ST_Buffer in ogr2ogr, or QGIS's Buffer tool)", path, thin.size,
                    len(geoms), fids[k], geoms[k].geom_type)  # fmt: skip


def _scene_bbox(info: dict, grid: Grid) -> tuple[float, float, float, float] | None:
    """The scene's footprint in the file's CRS, so that only features near it are read: one labels
    file may cover a whole archive of scenes."""
    if info.get("crs") is None or grid.rio_crs is None:
        return None
    return transform_bounds(grid.rio_crs, CRS.from_user_input(info["crs"]), *grid.bounds, densify_pts=21)


def file_extent(info: dict, grid: Grid) -> tuple[float, float, float, float] | None:
    """The file's total bounds in the scene's CRS (None when GDAL cannot tell them cheaply)."""
    bounds = info.get("total_bounds")
    if bounds is None or info.get("crs") is None or grid.rio_crs is None or not np.isfinite(bounds).all():
        return None
    return transform_bounds(CRS.from_user_input(info["crs"]), grid.rio_crs, *bounds, densify_pts=21)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def check_vector_label(labels: VectorLabels, image: str) -> None:
    """Warn when the file has no feature, or none inside the scene; fail when it lies wholly outside it."""
    path, background = labels.path, labels.options.background
    if not labels.info.get("features"):
        log.warning("vector label '%s' has no features: every pixel of '%s' is background (code %d)",
                    path, image, background)  # fmt: skip
        return
    gl, gb, gr, gt = labels.grid.bounds
    extent = file_extent(labels.info, labels.grid)
    if extent is None and len(labels.geoms):
        extent = tuple(shapely.total_bounds(labels.geoms))
    if extent is not None:
        left, bottom, right, top = extent
        if left >= gr or right <= gl or bottom >= gt or top <= gb:
            raise GeosegError(
                f"vector label '{path}' does not overlap image '{image}'; check that the label belongs to "
                "this image and that both CRSs are right."
            )
    if len(labels.tree.query(shapely.box(gl, gb, gr, gt), predicate="intersects")) == 0:
        log.warning("no feature of vector label '%s' lies inside '%s': every pixel is background (code %d)",
                    path, image, background)  # fmt: skip
