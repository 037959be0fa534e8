"""Predictions as polygons: a class map turned into a GeoPackage layer, strip by strip.

``rasterio.features.shapes`` runs over full-width strips of ``rows`` rows, in pixel coordinates (so
shared edges are exact integers). A polygon that touches the strip's lower edge is kept aside and
merged (``shapely.union_all`` of the same class) with the polygons of the next strip that touch their
upper edge; every other polygon is final, is moved to map coordinates, optionally simplified and
filtered by area (in map units or pixels: :mod:`~geoseg.inference.polygon_units`), and appended to
the layer. Memory is bounded by one strip and the polygons that cross its edge, whatever the scene
size. Nodata is never a polygon.
"""

from __future__ import annotations

import errno
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pyogrio
import rasterio
import shapely
from pyogrio.errors import DataLayerError, DataSourceError
from rasterio.features import shapes
from rasterio.windows import Window

from geoseg.classes import ClassInfo
from geoseg.errors import first_line
from geoseg.inference.polygon_units import described, parse_measure, pixel_area
from geoseg.log_format import quieted

LAYER = "classes"
BATCH = 5000  # polygons appended to the file at a time
log = logging.getLogger(__name__)


def strip_polygons(src: rasterio.DatasetReader, rows: int) -> Iterator[tuple[shapely.Geometry, int]]:
    """Every polygon of ``src``'s band 1 (nodata excluded) in pixel coordinates, merged across strips."""
    nodata = src.nodata
    pending: list[tuple[shapely.Geometry, int]] = []  # touching the previous strip's lower edge
    for top in range(0, src.height, rows):
        h = min(rows, src.height - top)
        arr = src.read(1, window=Window(0, top, src.width, h))
        valid = None if nodata is None else arr != nodata
        shifted = rasterio.Affine.translation(0, top)
        found = [(shapely.geometry.shape(g), int(v)) for g, v in shapes(arr, mask=valid, transform=shifted)]
        upper = [p for p in found if p[0].bounds[1] <= top]
        rest = [p for p in found if p[0].bounds[1] > top]
        merged = _merge(pending + upper) if pending else upper
        pending = []
        bottom = top + h
        for geom, value in merged + rest:
            if geom.bounds[3] >= bottom and bottom < src.height:
                pending.append((geom, value))
            else:
                yield geom, value
    yield from pending


def _merge(polys: list[tuple[shapely.Geometry, int]]) -> list[tuple[shapely.Geometry, int]]:
    """Union the polygons of each class, then split the result into its connected polygons."""
    out = []
    for value in sorted({v for _, v in polys}):
        union = shapely.union_all([g for g, v in polys if v == value])
        out += [(g, value) for g in shapely.get_parts(union)]
    return out


def write_polygons(
    class_path: str, out_path: str, classes: ClassInfo, min_area: float | str = 0.0,
    simplify: float | str = 0.0, rows: int = 256, shown: str | None = None,
) -> int:  # fmt: skip
    """Write the class map ``class_path`` as polygons (class code and name, its CRS) to the GeoPackage
    ``out_path``; return how many. ``min_area`` (map units², or ``'20px'``) drops small ones,
    ``simplify`` (map units, or ``'1.5px'``) simplifies them, keeping their topology valid. What they
    left out is logged with its unit; when none is written, a warning says why, naming ``shown`` (the
    GeoPackage's final name; default ``out_path``)."""
    written, found, batch = 0, 0, []
    area_filter, tolerance = parse_measure("min_area", min_area), parse_measure("simplify", simplify)
    with rasterio.open(class_path) as src:
        crs = src.crs.to_wkt() if src.crs else None
        a = src.transform
        matrix = [a.a, a.b, a.d, a.e, a.c, a.f]
        smallest, within = area_filter.in_map_units(pixel_area(a)), tolerance.in_map_units(pixel_area(a))
        units = [described(m, src.crs, a) for m in (area_filter, tolerance)]
        first = True

        def flush() -> None:
            nonlocal first, written, batch
            geoms = np.array([g for g, _ in batch], dtype=object)
            index = np.array([v for _, v in batch], dtype=np.int64)
            codes = np.array(
                [classes.codes[i] if 0 <= i < len(classes.codes) else i for i in index], np.int64
            )
            names = np.array([classes.names[i] if 0 <= i < len(classes.names) else "" for i in index], object)
            with warnings.catch_warnings(), quieted("pyogrio"):
                # the temporary name has no .gpkg extension (it is renamed); pyogrio logs every batch
                warnings.filterwarnings("ignore", message="The filename extension should be")
                try:
                    pyogrio.raw.write(
                        out_path, shapely.to_wkb(geoms), [codes, names, index],
                        fields=["code", "name", "index"], geometry_type="Polygon", crs=crs, driver="GPKG",
                        layer=LAYER, append=not first, promote_to_multi=False,
                    )  # fmt: skip
                except (DataSourceError, DataLayerError) as err:  # GDAL's failed write (disk full, I/O)
                    raise OSError(errno.EIO, f"GeoPackage write failed: {first_line(err)}") from err
            first, written, batch = False, written + len(geoms), []

        for geom, value in strip_polygons(src, rows):
            found += 1
            geom = shapely.affinity.affine_transform(geom, matrix)
            if within > 0:
                geom = shapely.simplify(geom, within, preserve_topology=True)
            if geom.is_empty or geom.area < smallest:
                continue
            batch.append((geom, value))
            if len(batch) >= BATCH:
                flush()
        if batch or first:
            flush()
    if not written:
        warn_no_polygons(shown or out_path, found, *units)
    elif written < found:
        after = f" (after {units[1]})" if within > 0 else ""
        log.info("%s: %d of %d polygons left out by %s%s", shown or out_path, found - written, found,
                 units[0], after)  # fmt: skip
    return written


def warn_no_polygons(path: str, found: int, min_area: str, simplify: str) -> None:
    """Say why a polygon layer is empty: the class map is all nodata, or ``min_area``/``simplify``
    (each with its unit) dropped every polygon."""
    if found:
        log.warning("'%s' has no polygons: %s or %s dropped all %d; lower them, or give them in pixels "
                    "(min_area=20px, simplify=1.5px)", path, min_area, simplify, found)  # fmt: skip
    else:
        log.warning("'%s' has no polygons: the class map is nodata everywhere (the input has no valid "
                    "pixel)", path)  # fmt: skip
