"""``data.stac`` parsed once: where the items come from (a STAC API or a static catalog) and which to take.

:class:`StacOptions` checks every key in one line naming it and the fix, and normalises what a search
is keyed by (dates to RFC 3339 UTC intervals, queries to the STAC query extension's JSON, an AOI file
to a GeoJSON geometry in EPSG:4326); :mod:`geoseg.data.stac_search` finds the items.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from geoseg.config import as_dict, is_real, is_whole
from geoseg.data.remote import file_url_path, is_url, shown
from geoseg.errors import GeosegError, first_line

log = logging.getLogger(__name__)

OPTION_KEYS = (
    "api", "source", "collections", "bbox", "intersects", "datetime", "query", "ids", "max_items",
    "label_asset", "refresh",
)  # fmt: skip
SEARCH_KEYS = ("api", "source", "collections", "bbox", "intersects", "datetime", "query", "ids", "max_items")
# query operators: the text forms pystac-client's command line takes (and != for <>), the JSON names of the
# STAC API query extension; two-character operators first so that "<=" is not read as "<"
TEXT_OPS = {"<=": "lte", ">=": "gte", "!=": "neq", "<>": "neq", "==": "eq", "=": "eq", "<": "lt", ">": "gt"}
QUERY_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
_QUERY_TEXT = re.compile(r"^\s*([^<>=!\s]+)\s*(<=|>=|!=|<>|==|=|<|>)\s*(.*?)\s*$")
_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")


@dataclass(frozen=True)
class StacOptions:
    """``data.stac``: where the items come from and which to take."""

    api: str | None = None  # URL of a STAC API, searched with pystac-client
    source: str | None = None  # path or URL of a static Item / ItemCollection / Catalog / Collection JSON
    collections: tuple[str, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None  # EPSG:4326
    intersects: dict[str, Any] | None = field(default=None, hash=False)  # GeoJSON geometry, EPSG:4326
    datetime: str | None = None  # RFC 3339 interval "start/end" ('..' = open), normalised
    query: dict[str, dict[str, Any]] | None = field(default=None, hash=False)  # {prop: {op: value}}
    ids: tuple[str, ...] | None = None
    max_items: int = 100
    label_asset: str | None = None  # asset key of each item's label raster or vector
    refresh: bool = False  # search again even when a frozen copy of this search exists
    option: str = field(default="data.stac", compare=False, repr=False)

    @classmethod
    def from_config(
        cls,
        mapping: Mapping[str, Any] | None,
        option: str = "data.stac",
        root: str | os.PathLike | None = None,
    ) -> StacOptions:
        """The options from a ``data.stac`` mapping, checked; a mistake is one line naming the key.

        A relative ``source`` or ``intersects`` path is taken under ``root`` (the working folder when None).
        """
        if not isinstance(mapping, Mapping):
            raise GeosegError(
                f"{option} must be a mapping with api (a STAC API URL) or source (a STAC JSON file), "
                f"got {mapping!r}."
            )
        value = as_dict(mapping)
        unknown = sorted(str(k) for k in set(value) - set(OPTION_KEYS))
        if unknown:
            close = difflib.get_close_matches(unknown[0], OPTION_KEYS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise GeosegError(f"{option} has unknown keys {unknown}{hint}; use {list(OPTION_KEYS)}.")
        api, source = value.get("api"), value.get("source")
        if (api is None) == (source is None):
            got = "both" if api is not None else "neither"
            raise GeosegError(
                f"{option} needs exactly one of api (a STAC API URL) or source (the path or URL of a static "
                f"STAC Item, ItemCollection, Catalog or Collection JSON), got {got}."
            )
        if api is not None and not (isinstance(api, str) and urlsplit(api).scheme in ("http", "https")):
            raise GeosegError(
                f"{option}.api must be the http(s) URL of a STAC API, e.g. "
                f"https://earth-search.aws.element84.com/v1, got {api!r}."
            )
        if source is not None:
            if not isinstance(source, str) or not source.strip():
                raise GeosegError(
                    f"{option}.source must be a path or URL of a STAC JSON file, got {source!r}."
                )
            source = file_url_path(source)
            source = source if is_url(source) else _under(source, root)
        bbox, intersects = value.get("bbox"), value.get("intersects")
        if bbox is not None and intersects is not None:
            raise GeosegError(f"{option}.bbox and {option}.intersects are both set; give one of them.")
        max_items = value.get("max_items", 100)
        if not is_whole(max_items) or max_items < 1:
            raise GeosegError(f"{option}.max_items must be a whole number >= 1, got {max_items!r}.")
        label_asset = value.get("label_asset")
        if label_asset is not None and (not isinstance(label_asset, str) or not label_asset):
            raise GeosegError(
                f"{option}.label_asset must be the asset key of each item's label, or null; "
                f"got {label_asset!r}."
            )
        refresh = value.get("refresh", False)
        if not isinstance(refresh, bool):
            raise GeosegError(f"{option}.refresh must be true or false, got {refresh!r}.")
        return cls(
            api=api, source=source,
            collections=_names(value.get("collections"), f"{option}.collections", "[sentinel-2-l2a]"),
            bbox=_bbox(bbox, f"{option}.bbox"),
            intersects=None if intersects is None else aoi_geometry(intersects, f"{option}.intersects", root),
            datetime=None if value.get("datetime") is None else normalise_interval(
                value["datetime"], f"{option}.datetime"),
            query=_query(value.get("query"), f"{option}.query"),
            ids=_names(value.get("ids"), f"{option}.ids", "[S2A_33TUM_20240612_0_L2A]"),
            max_items=int(max_items), label_asset=label_asset, refresh=refresh, option=option,
        )  # fmt: skip

    @property
    def where(self) -> str:
        """The API or source, as shown in messages (no query string or credentials)."""
        return shown(self.api or self.source or "")

    def search_key(self) -> dict[str, Any]:
        """The normalised search (all but label_asset and refresh): what the frozen copy is keyed by."""
        key = {k: getattr(self, k) for k in SEARCH_KEYS}
        for k in ("collections", "ids"):
            key[k] = None if key[k] is None else sorted(key[k])
        key["bbox"] = None if self.bbox is None else list(self.bbox)
        return key

    def digest(self) -> str:
        """A short sha256 of :meth:`search_key`."""
        text = json.dumps(self.search_key(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """The search in a few words, for messages."""
        parts = [f"{k}={list(getattr(self, k))}" for k in ("collections", "ids") if getattr(self, k)]
        if self.datetime is not None:
            parts.append(f"datetime={self.datetime}")
        if self.bbox is not None:
            parts.append(f"bbox={list(self.bbox)}")
        if self.intersects is not None:
            parts.append(f"intersects=<{self.intersects.get('type')}>")
        if self.query:
            parts.append(f"query={self.query}")
        return ", ".join(parts) or "no filters"


# --- option parsing ------------------------------------------------------------------------------------


def _under(path: str, root: str | os.PathLike | None) -> str:
    """``path`` (``~`` expanded) made absolute under ``root``, or under the working folder."""
    path = os.path.expanduser(path)
    return os.path.abspath(path if root is None else os.path.join(os.fspath(root), path))


def _names(value: Any, option: str, example: str) -> tuple[str, ...] | None:
    """A list of names (a single name is a list of one); whole numbers are names too (YAML reads 123)."""
    if value is None:
        return None
    if isinstance(value, str) or is_whole(value):
        value = [value]
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise GeosegError(f"{option} must be a list of names, e.g. {option}={example}, got {value!r}.")
    names = [str(v) if is_whole(v) else v for v in value]
    if not names or not all(isinstance(v, str) and v for v in names):
        raise GeosegError(
            f"{option} must be a non-empty list of names, e.g. {option}={example}, got {value!r}."
        )
    return tuple(names)


def _bbox(value: Any, option: str) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    numbers = list(value) if isinstance(value, Iterable) and not isinstance(value, (str, Mapping)) else None
    fix = f"{option} must be [minx, miny, maxx, maxy] in degrees (EPSG:4326), e.g. [11.0, 46.0, 11.5, 46.5]"
    if numbers is None or len(numbers) != 4 or not all(is_real(v) for v in numbers):
        raise GeosegError(f"{fix}, got {value!r}.")
    minx, miny, maxx, maxy = (float(v) for v in numbers)
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise GeosegError(f"{fix} with min < max and longitudes/latitudes in range, got {numbers}.")
    return minx, miny, maxx, maxy


def _parse_value(text: str) -> Any:
    """A query value: a JSON number, bool or string (``20`` is 20, ``"20"`` is "20", ``S2A`` is "S2A")."""
    try:
        value = json.loads(text)
    except ValueError:
        return text.strip("'")
    return value if isinstance(value, (str, int, float, bool)) else text


def _query(value: Any, option: str) -> dict[str, dict[str, Any]] | None:
    """``query`` as the STAC API query extension's mapping ``{prop: {op: value}}``."""
    if value is None:
        return None
    example = f'{option}=["eo:cloud_cover<20"]'
    if isinstance(value, str):
        value = [value]
    out: dict[str, dict[str, Any]] = {}
    if isinstance(value, Mapping):
        for prop, ops in value.items():
            if not isinstance(ops, Mapping) or not ops:
                raise GeosegError(
                    f"{option}.{prop} must map operators to values, e.g. {{lt: 20}}, got {ops!r}; "
                    f"or write {example}."
                )
            for op, v in ops.items():
                if op not in QUERY_OPS:
                    raise GeosegError(f"{option}.{prop} has operator {op!r}; use one of {list(QUERY_OPS)}.")
                if op == "in" and (isinstance(v, (str, Mapping)) or not isinstance(v, Iterable)):
                    raise GeosegError(f"{option}.{prop}.in must be a list of values, got {v!r}.")
                out.setdefault(str(prop), {})[op] = list(v) if op == "in" else v
        return out or None
    if not isinstance(value, Iterable):
        raise GeosegError(
            f"{option} must be a list of conditions like {example}, or a mapping, got {value!r}."
        )
    for i, text in enumerate(value):
        match = _QUERY_TEXT.match(text) if isinstance(text, str) else None
        if match is None or not match.group(3):
            raise GeosegError(
                f"{option}[{i}] must be a condition 'property<op>value' with op one of "
                f"{list(TEXT_OPS)}, e.g. {example}, got {text!r}."
            )
        prop, op, v = match.groups()
        out.setdefault(prop, {})[TEXT_OPS[op]] = _parse_value(v)
    return out or None


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _instant(text: str, end: bool, option: str) -> datetime | None:
    """One end of an interval: None for open (``..`` or empty); a date (``2024``, ``2024-06``,
    ``2024-06-01``) is its first second, or its last when ``end``."""
    from dateutil.parser import isoparse
    from dateutil.relativedelta import relativedelta

    text = text.strip()
    if text in ("", ".."):
        return None
    match = _DATE.match(text)
    try:
        if match is None:
            return as_utc(isoparse(text))
        year, month, day = (int(g) if g else None for g in match.groups())
        start = datetime(year, month or 1, day or 1, tzinfo=timezone.utc)  # type: ignore[arg-type]
    except (ValueError, OverflowError) as err:
        raise GeosegError(
            f"{option} has '{text}', not a date or RFC 3339 time ({err}); write e.g. "
            f"{option}=2024-06-01/2024-08-31 or 2024-06-01T00:00:00Z/.."
        ) from None
    if not end:
        return start
    step = relativedelta(days=1) if day else relativedelta(months=1) if month else relativedelta(years=1)
    return start + step - timedelta(seconds=1)


def _stamp(value: datetime | None) -> str:
    return ".." if value is None else value.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{value.microsecond:06d}".rstrip("0") if value.microsecond else "") + "Z"  # fmt: skip


def normalise_interval(value: Any, option: str = "data.stac.datetime") -> str:
    """A datetime or interval (``2024-06-01/2024-08-31``, ``2024-06``, ``2024-06-01T10:00:00Z/..``) as an RFC
    3339 interval in UTC; a date alone is the whole day (month, year)."""
    if isinstance(value, datetime):
        return _stamp(as_utc(value))
    if isinstance(value, date):
        value = value.isoformat()
    if not isinstance(value, str) or not value.strip() or value.count("/") > 1:
        raise GeosegError(
            f"{option} must be a date, time or interval 'start/end' ('..' for open), e.g. "
            f"{option}=2024-06-01/2024-08-31, got {value!r}."
        )
    parts = value.split("/")
    if len(parts) == 1:
        start, end = _instant(parts[0], False, option), _instant(parts[0], True, option)
        if start is None:
            raise GeosegError(f"{option} '{value}' is open at both ends; give a start or an end.")
        return _stamp(start) if not _DATE.match(parts[0].strip()) else f"{_stamp(start)}/{_stamp(end)}"
    start, end = _instant(parts[0], False, option), _instant(parts[1], True, option)
    if start is None and end is None:
        raise GeosegError(f"{option} '{value}' is open at both ends; give a start or an end.")
    if start is not None and end is not None and start > end:
        raise GeosegError(f"{option} '{value}' ends before it starts; write start/end.")
    return f"{_stamp(start)}/{_stamp(end)}"


def interval_of(text: str) -> tuple[datetime | None, datetime | None]:
    parts = text.split("/")
    start = _instant(parts[0], False, "data.stac.datetime")
    return start, (_instant(parts[1], True, "data.stac.datetime") if len(parts) == 2 else start)


def aoi_geometry(
    value: Any, option: str = "data.stac.intersects", root: str | os.PathLike | None = None
) -> dict[str, Any]:
    """An area of interest as one GeoJSON geometry in EPSG:4326: a GeoJSON geometry (Feature,
    FeatureCollection) mapping, or a vector file (GeoJSON, GPKG, ...; relative to ``root``) whose
    geometries are unioned."""
    import shapely
    from shapely.geometry import mapping, shape

    if isinstance(value, Mapping):
        try:
            kind = value.get("type")
            if kind == "FeatureCollection":
                geoms = [shape(f["geometry"]) for f in value.get("features") or [] if f.get("geometry")]
            else:
                geoms = [shape(value["geometry"] if kind == "Feature" else value)]
        except Exception as err:  # shapely's errors for a malformed geometry
            raise GeosegError(
                f"{option} is not a GeoJSON geometry ({first_line(err)}); give e.g. "
                "{type: Polygon, coordinates: [[[11, 46], [11.5, 46], [11.5, 46.5], [11, 46]]]} "
                "or a vector file."
            ) from None
        where = option
    elif isinstance(value, str) and value:
        geoms, where = _read_aoi(_under(value, root), option), f"{option} '{value}'"
    else:
        raise GeosegError(f"{option} must be a vector file path or a GeoJSON geometry, got {value!r}.")
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        raise GeosegError(f"{where} has no geometry; give an area with at least one polygon.")
    union = shapely.union_all(shapely.make_valid(geoms))
    return json.loads(json.dumps(mapping(union)))  # tuples -> lists: the same value as read back from JSON


def _read_aoi(path: str, option: str) -> list:
    """The geometries of a vector file, in EPSG:4326."""
    import numpy as np
    import pyogrio
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform as transform_xy

    if not os.path.exists(path):
        raise GeosegError(f"{option} file not found: '{path}'; give a vector file (GeoJSON, GPKG, ...).")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, columns=[])
    except Exception as err:  # pyogrio's DataSourceError, DataLayerError, ...
        raise GeosegError(
            f"cannot read {option} '{path}' ({first_line(err)}); give a GeoJSON/GPKG file."
        ) from None
    if meta.get("crs") is None:
        raise GeosegError(f"{option} '{path}' has no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:xxxx).")
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, dtype=object)
    src, dst = CRS.from_user_input(meta["crs"]), CRS.from_epsg(4326)
    if len(geoms) and src != dst:

        def move(xy: np.ndarray) -> np.ndarray:
            xs, ys = transform_xy(src, dst, xy[:, 0], xy[:, 1])
            return np.column_stack([xs, ys])

        geoms = shapely.transform(geoms, move)
    return list(geoms)


# --- URLs and hrefs ------------------------------------------------------------------------------------


def stac_given(value: Mapping[str, Any] | None) -> bool:
    """Whether a ``data.stac`` mapping names a catalog (its ``api`` or ``source`` is set)."""
    return bool(value) and bool(value.get("api") or value.get("source"))
