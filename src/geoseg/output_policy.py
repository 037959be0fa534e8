"""What a command may write over: one policy for every output path, and ``existing=error|skip|overwrite``.

A command never writes over one of its own inputs, a folder, or a file it did not produce. An output
path that exists is, by ``existing=``:

- ``error``: refused in one line;
- ``skip``: kept, and its work skipped;
- ``overwrite``: replaced only when it is a file of the kind the command writes, recognised by its
  content (a band-statistics JSON, a class map tagged by ``geoseg predict``, a PNG whose ``Software``
  is geoseg, ...). A checkpoint, a user's raster, vector, config or any other file is never replaced.

Every command that writes calls :func:`claim_output` before any work (or :func:`check_folder_output`
for a folder it fills), and every output it writes carries the mark its kind is recognised by.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from geoseg.errors import GeosegError

log = logging.getLogger(__name__)

EXISTING = ("error", "skip", "overwrite")
SOFTWARE = "geoseg"  # the PNG ``Software`` text of every picture geoseg writes
PNG_METADATA = {"Software": SOFTWARE}  # matplotlib's ``savefig(metadata=...)`` of those pictures
CONVERTED_TAG = "geoseg_converted_from"  # the GeoTIFF tag of a file `geoseg convert` wrote
CLASSES_TAG = "geoseg_classes"  # the GeoTIFF tag of a class map or probabilities `geoseg predict` wrote
REPORT_MARK = "<!-- written by geoseg report -->"
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc", ".hdf", ".h5")
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".kml", ".gml", ".parquet")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")
JSON_LIMIT = 256 * 2**20  # a JSON file larger than this is no geoseg output of the kinds below


def check_existing(value: Any, option: str = "existing") -> str:
    """``existing=`` as one of :data:`EXISTING`, or a one-line error."""
    if value not in EXISTING:
        raise GeosegError(f"{option}={value!r} is not one of error, skip, overwrite (what to do with an "
                          "output that exists: refuse, keep it, or replace a file geoseg wrote)")  # fmt: skip
    return str(value)


def _json(path: str) -> Any:
    try:
        if os.path.getsize(path) > JSON_LIMIT:
            return None
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _json_with(*keys: str) -> Callable[[str], bool]:
    def recognise(path: str) -> bool:
        data = _json(path)
        return isinstance(data, dict) and all(k in data for k in keys)

    return recognise


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _geotiff_tags(path: str) -> dict[str, str] | None:
    """The dataset tags of a (Geo)TIFF or other raster; None for anything GDAL cannot open as one."""
    import rasterio

    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError:
        return None
    if magic not in TIFF_MAGIC and not path.lower().endswith(RASTER_SUFFIXES):
        return None  # not probed: GDAL would print an error for every JSON, PNG or checkpoint
    try:
        with rasterio.open(path) as src:
            return src.tags()
    except (rasterio.errors.RasterioError, OSError):
        return None


def _tagged(tag: str) -> Callable[[str], bool]:
    def recognise(path: str) -> bool:
        return tag in (_geotiff_tags(path) or {})

    return recognise


def _text_head(path: str, size: int = 4096) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(size)
    except OSError:
        return ""


def is_geoseg_png(path: str) -> bool:
    """A PNG whose ``Software`` text is geoseg's (quicklooks, error maps, report plots)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and str(image.info.get("Software", "")).startswith(SOFTWARE)
    except (OSError, UnidentifiedImageError):
        return False


def is_export(path: str) -> bool:
    """A model file `geoseg export` wrote: its JSON sidecar names the geoseg export format."""
    return is_export_sidecar(f"{path}.json")


def is_export_sidecar(path: str) -> bool:
    data = _json(path)
    return isinstance(data, dict) and data.get("format") == "geoseg-export"


def is_report(path: str) -> bool:
    """``results.md`` (its mark, or the counts line of one written before the mark) or ``results.csv``."""
    head = _text_head(path)
    if path.endswith(".csv"):
        return head.startswith("job,status,")
    return REPORT_MARK in _text_head(path, 2**20) or bool(re.search(r"^\d+ jobs: \d+ finished, ", head, re.M))


def is_data_config(path: str) -> bool:
    """A data config `geoseg init-data` wrote (its first line says so)."""
    first = _text_head(path, 1024).splitlines()[:1]
    return bool(first) and first[0].startswith("# Data config for") and "geoseg init-data" in first[0]


def is_polygons(path: str) -> bool:
    """A GeoPackage `geoseg predict vectorize=true` wrote: a ``classes`` layer of code, name and index."""
    import pyogrio

    try:
        fields = pyogrio.read_info(path, layer="classes")["fields"]
    except Exception:  # pyogrio raises its own errors, or ValueError/OSError, for a file it cannot read
        return False
    return {"code", "name", "index"} <= set(fields)


@dataclass(frozen=True)
class OutputKind:
    """What a command writes: its name in messages and how a file of it is recognised."""

    what: str
    recognise: Callable[[str], bool]


KINDS: dict[str, OutputKind] = {
    "stats": OutputKind("band statistics file", _json_with("bands", "mean", "std")),
    "metrics": OutputKind("metrics file", _json_with("miou", "confusion", "classes")),
    "prediction": OutputKind("prediction", _tagged(CLASSES_TAG)),
    "polygons": OutputKind("polygon file", is_polygons),
    "converted": OutputKind("converted scene", _tagged(CONVERTED_TAG)),
    "picture": OutputKind("PNG picture", is_geoseg_png),
    "export": OutputKind("exported model", is_export),
    "export_sidecar": OutputKind("export sidecar", is_export_sidecar),
    "report": OutputKind("report file", is_report),
    "data_config": OutputKind("data config", is_data_config),
}


def with_article(noun: str) -> str:
    """``a raster``, ``an exported model``."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def describe(path: str) -> str:
    """What an existing path is, in a few words, for a message: ``a folder``, ``a GeoTIFF raster``, ..."""
    if os.path.isdir(path):
        return "a folder"
    lower = path.lower()
    if lower.endswith(CHECKPOINT_SUFFIXES):
        return "a checkpoint"
    for name, kind in KINDS.items():
        if name not in ("stats", "metrics") and kind.recognise(path):
            return f"{with_article(kind.what)} geoseg wrote"
    if lower.endswith(VECTOR_SUFFIXES) and not KINDS["stats"].recognise(path):
        return "a vector file" if not lower.endswith(".json") else "a JSON file"
    if _geotiff_tags(path) is not None:
        return "a raster"
    for name in ("stats", "metrics"):
        if KINDS[name].recognise(path):
            return with_article(KINDS[name].what)
    return "a file"


def same_file(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one file (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _input_paths(inputs: Iterable[str | os.PathLike | None]) -> list[str]:
    return [str(p) for p in inputs if p is not None and str(p)]


def check_parent(path: str, option: str = "output") -> None:
    """A one-line error when a folder above ``path`` is a file (the write would fail deep in a library)."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise GeosegError(f"{option}='{path}': '{parent}' is a file, not a folder; choose another {option}")


def claim_output(
    path: str | os.PathLike, kind: str, existing: str = "error",
    inputs: Iterable[str | os.PathLike | None] = (), option: str = "output", instead: str = "",
) -> bool:  # fmt: skip
    """Whether ``path`` may be written as a ``kind`` output: True to write, False to skip it.

    Raises a one-line GeosegError, before any work, when ``path`` is a folder, one of ``inputs``, or
    an existing file that ``existing`` does not let the command replace (see the module docstring).
    Messages name ``option='path'`` (``'path'`` when ``option`` is empty) and end with ``instead``
    (default: choose another ``option``).
    """
    path, what = str(path), KINDS[kind].what
    named = f"{option}='{path}'" if option else f"'{path}'"
    instead = instead or f"choose another {option}"
    check_existing(existing)
    if os.path.isdir(path):
        raise GeosegError(f"{named} is a folder; name a file for the {what} (a new name, "
                          f"or one inside that folder)")  # fmt: skip
    check_parent(path, option or "output")
    for item in _input_paths(inputs):
        if os.path.exists(item) and same_file(path, item):
            raise GeosegError(f"{named} is one of this command's inputs; geoseg never writes "
                              f"over an input: {instead}")  # fmt: skip
    if not os.path.lexists(path):
        return True
    if existing == "skip":
        log.info("keeping %s (it exists; existing=skip)", path)
        return False
    found, thing = describe(path), with_article(what)
    if existing == "error":
        raise GeosegError(f"{named} exists ({found}); pass existing=overwrite to replace {thing} "
                          f"geoseg wrote, existing=skip to keep it, or {instead}")  # fmt: skip
    if not KINDS[kind].recognise(path):
        raise GeosegError(f"{named} is {found}, not {thing} geoseg wrote; geoseg never replaces "
                          f"it, even with existing=overwrite: {instead}")  # fmt: skip
    return True


def check_folder_output(path: str | os.PathLike, option: str = "output") -> None:
    """A folder ``path`` a command fills: a one-line error when it is a file."""
    path = str(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise GeosegError(f"{option}='{path}' is {describe(path)}, not a folder; name a folder for the "
                          "outputs (a new one is made)")  # fmt: skip
    check_parent(path, option)
