"""Scenes from STAC: items searched in a STAC API (pystac-client) or read from a static catalog (pystac).

``data.stac`` says where the items come from (``api`` or ``source``) and which to take; each item is one
scene whose files are the item's assets named by ``data.files`` (in that order). The items found are
written once, with absolute asset hrefs, to ``<cache_dir>/stac-<hash>.json`` (a STAC ItemCollection); a
later run with the same search reads that file instead of searching, so it repeats exactly after the
catalog changes, and works offline. ``data.stac.refresh=true`` searches again.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from geoseg.config import as_dict, is_real, is_whole
from geoseg.data.band_files import FileEntry
from geoseg.data.remote import is_remote
from geoseg.errors import GeosegError, first_line
from geoseg.io import atomic_write_text

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
TIMEOUT = (10.0, 60.0)  # seconds to connect, to wait for a response
PAGE_LIMIT = 250  # items asked for per page of a search (the API may send fewer)
RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")

Scene = tuple[tuple[str, ...], str | None, str]  # (image hrefs in data.files order, label or None, item id)


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
            source = _local_path(source)
            source = source if _is_url(source) else _under(source, root)
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
        return shown_url(self.api or self.source or "")

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


def _utc(value: datetime) -> datetime:
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
            return _utc(isoparse(text))
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
        return _stamp(_utc(value))
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


def _interval(text: str) -> tuple[datetime | None, datetime | None]:
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


def _is_url(href: str) -> bool:
    parts = urlsplit(href)
    return bool(parts.scheme) and bool(parts.netloc) and len(parts.scheme) > 1  # "C:" is a drive


def _local_path(href: str) -> str:
    """``file:///x/y.tif`` as ``/x/y.tif`` (GDAL reads paths); other hrefs as they are."""
    return unquote(urlsplit(href).path) if href.startswith("file://") else href


def shown_url(url: str) -> str:
    """``url`` without its query string, fragment and credentials (tokens and keys stay out of logs)."""
    parts = urlsplit(url)
    if not _is_url(url):
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _scrub(text: str) -> str:
    """Query strings and credentials out of an error text."""
    text = re.sub(r"//[^/\s:@'\"]+:[^/\s@'\"]*@", "//", text)
    return re.sub(r"\?[^\s'\")]*", "", text)


def absolute_href(href: str, base: str | None) -> str:
    """``href`` made absolute against ``base`` (the URL or path of the JSON it was read from)."""
    href = _local_path(href)
    if _is_url(href) or os.path.isabs(href) or not base:
        return href
    base = _local_path(base)
    if _is_url(base):
        return urljoin(base, href)
    return os.path.normpath(os.path.join(os.path.dirname(base), href))


def _self_href(item: Mapping[str, Any]) -> str | None:
    return next((link.get("href") for link in item.get("links") or [] if link.get("rel") == "self"), None)


def absolute_item(item: Mapping[str, Any], location: str | None) -> dict[str, Any]:
    """A copy of ``item`` whose asset and link hrefs are absolute: resolved against its self link, else
    against ``location`` (where the JSON holding it was read)."""
    item = json.loads(json.dumps(item))
    self_href = _self_href(item)
    base = absolute_href(self_href, location) if self_href else location
    for asset in (item.get("assets") or {}).values():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            asset["href"] = absolute_href(asset["href"], base)
    for link in item.get("links") or []:
        if isinstance(link, dict) and isinstance(link.get("href"), str):
            link["href"] = absolute_href(link["href"], base)
    return item


# --- errors from the network ---------------------------------------------------------------------------


def _cause(err: BaseException) -> str:
    """Why a read failed, in a few words: connection refused, HTTP 404: Not Found, timed out, not JSON."""
    from json import JSONDecodeError

    response = getattr(err, "response", None)
    status = getattr(err, "status_code", None) or getattr(response, "status_code", None)
    text = str(err)
    if status:
        detail = (_detail(response.text) or response.reason) if response is not None else _detail(text)
        return f"HTTP {status}" + (f": {detail}" if detail else "")
    if type(err).__name__ in ("STACTypeError", "ClientTypeError"):  # pystac's, pystac-client's
        return "the JSON is not a STAC catalog, collection or item"
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, JSONDecodeError) or "JSONDecodeError" in text or "Expecting value" in text:
        return "the response is not JSON"
    for pattern in (r"ResponseError\('([^']+)'", r"\[Errno -?\d+\] ([^'\")\]]+)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1).strip().lower()
    if "timed out" in text.lower():
        return f"timed out: {TIMEOUT[0]:.0f} s to connect, {TIMEOUT[1]:.0f} s to answer"
    return _scrub(first_line(err))[:160]


def _detail(text: str) -> str:
    """The message of an HTTP error body: a JSON error's description, or the body's text, short."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        text = str(
            next((body[k] for k in ("description", "detail", "message", "title", "code") if k in body), "")
        )
    text = re.sub(r"<[^>]*>", " ", text)
    text = " ".join(text.split())
    return _scrub(text[:100] + ("..." if len(text) > 100 else ""))


def _read_failure(what: str, url: str, err: BaseException, fix: str) -> GeosegError:
    """One line for a failed read of ``url`` (or of the file that ``err``, unwrapped, names)."""
    while err.__cause__ is not None:  # pystac wraps a child's read error: "HREF ... does not resolve"
        err = err.__cause__
    return GeosegError(
        f"{what} '{shown_url(_failed_href(err, url))}' could not be read ({_cause(err)}); {fix}"
    )


@contextmanager
def _quiet_retries() -> Iterator[None]:
    """Silence urllib3's per-retry warnings (they show the URL's query string, where keys live); the
    failure, if any, is one line of ours."""
    logger = logging.getLogger("urllib3.connectionpool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _retry() -> Any:
    """Retries for a flaky network: once on a failed connect or read, three times on 429/5xx."""
    from urllib3 import Retry

    return Retry(
        total=3, connect=1, read=1, status=3, backoff_factor=0.5, allowed_methods=None,
        status_forcelist=(429, 500, 502, 503, 504), raise_on_status=True,
    )  # fmt: skip


def _static_io() -> Any:
    """pystac's reader with a timeout and retries for URLs (pystac's own waits forever); paths as usual."""
    import requests
    from pystac.stac_io import DefaultStacIO
    from requests.adapters import HTTPAdapter

    class StaticIO(DefaultStacIO):
        def __init__(self) -> None:
            super().__init__()
            self.session = requests.Session()
            self.session.mount("http://", HTTPAdapter(max_retries=_retry()))
            self.session.mount("https://", HTTPAdapter(max_retries=_retry()))

        def read_text_from_href(self, href: str) -> str:
            if not _is_url(href):
                return super().read_text_from_href(href)
            response = self.session.get(href, timeout=TIMEOUT)
            response.raise_for_status()
            return response.content.decode("utf-8")

    return StaticIO()


def _failed_href(err: BaseException, default: str) -> str:
    """The file or URL a read error is about (an HTTP response's URL, a missing file's name)."""
    for owner in (getattr(err, "response", None), getattr(err, "request", None)):
        if getattr(owner, "url", None):
            return str(owner.url)
    return str(getattr(err, "filename", None) or default)


# --- finding the items ---------------------------------------------------------------------------------


def _item_time(item: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    from dateutil.parser import isoparse

    props = item.get("properties") or {}
    out = []
    for key in ("start_datetime", "end_datetime"):
        text = props.get(key) or props.get("datetime")
        try:
            out.append(_utc(isoparse(text)) if isinstance(text, str) else None)
        except (ValueError, OverflowError):
            out.append(None)
    return out[0], out[1]


def _item_bbox(item: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    bbox = item.get("bbox")
    if isinstance(bbox, list) and len(bbox) in (4, 6):
        half = len(bbox) // 2
        return bbox[0], bbox[1], bbox[half], bbox[half + 1]
    if item.get("geometry"):
        from shapely.geometry import shape

        return tuple(shape(item["geometry"]).bounds)  # type: ignore[return-value]
    return None


def _compare(have: Any, op: str, want: Any) -> bool:
    if op == "in":
        return have in want
    if op in ("eq", "neq"):
        same = have == want
        return same if op == "eq" else not same
    numbers = is_real(have) and is_real(want)
    if not numbers and not (isinstance(have, str) and isinstance(want, str)):
        return False
    return {"lt": have < want, "lte": have <= want, "gt": have > want, "gte": have >= want}[op]


def item_matches(item: Mapping[str, Any], opts: StacOptions) -> bool:
    """Whether a static item passes the filters of ``opts`` (as a STAC API would filter it)."""
    if opts.ids is not None and item.get("id") not in opts.ids:
        return False
    if opts.collections is not None and item.get("collection") not in opts.collections:
        return False
    if opts.bbox is not None:
        box = _item_bbox(item)
        minx, miny, maxx, maxy = opts.bbox
        if box is None or box[0] > maxx or box[2] < minx or box[1] > maxy or box[3] < miny:
            return False
    if opts.intersects is not None:
        from shapely.geometry import box as make_box
        from shapely.geometry import shape

        geom = item.get("geometry")
        bounds = _item_bbox(item)
        footprint = shape(geom) if geom else make_box(*bounds) if bounds else None
        if footprint is None or not footprint.intersects(shape(opts.intersects)):
            return False
    if opts.datetime is not None:
        start, end = _interval(opts.datetime)
        first, last = _item_time(item)
        if first is None and last is None:
            return False
        if (start is not None and last is not None and last < start) or (
            end is not None and first is not None and first > end
        ):
            return False
    props = item.get("properties") or {}
    for prop, ops in (opts.query or {}).items():
        if prop not in props or not all(_compare(props[prop], op, v) for op, v in ops.items()):
            return False
    return True


def _sort_key(item: Mapping[str, Any]) -> tuple[str, str, str]:
    props = item.get("properties") or {}
    when = props.get("datetime") or props.get("start_datetime") or ""
    return str(item.get("id", "")), str(when), str(item.get("collection") or "")


def _static_items(opts: StacOptions) -> list[dict[str, Any]]:
    """Every item of a static source (a catalog or collection walked to its leaves), hrefs absolute."""
    source = opts.source or ""
    what = f"{opts.option}.source"
    fix = "check the path or URL; it must be a STAC Item, ItemCollection, Catalog or Collection JSON."
    if not _is_url(source) and not os.path.exists(source):
        raise GeosegError(f"{what} not found: '{source}'; {fix}")
    io = _static_io()
    try:
        with _quiet_retries():
            return _walk(source, io, what, fix)
    finally:
        io.session.close()


def _walk(source: str, io: Any, what: str, fix: str) -> list[dict[str, Any]]:
    """The items in the JSON at ``source`` (read with ``io``), following a catalog's links to its items."""
    import pystac

    try:
        d = io.read_json(source)
    except Exception as err:
        raise _read_failure(what, source, err, fix) from None
    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind == "Feature":
        return [absolute_item(d, source)]
    if kind == "FeatureCollection":
        features = d.get("features")
        if not isinstance(features, list) or not all(isinstance(f, Mapping) for f in features):
            raise GeosegError(f"{what} '{shown_url(source)}' is a FeatureCollection without a list of items.")
        return [absolute_item(f, source) for f in features]
    if kind not in ("Catalog", "Collection"):
        raise GeosegError(
            f"{what} '{shown_url(source)}' is not a STAC Item, ItemCollection, Catalog or Collection "
            f"(its type is {kind!r}); {fix}"
        )
    items = []
    try:
        cls = pystac.Catalog if kind == "Catalog" else pystac.Collection
        catalog = cls.from_dict(d, href=source, migrate=True, preserve_dict=False)
        catalog._stac_io = io  # children and items are read with the same timeouts
        root = catalog.get_root_link()
        if root is not None and not root.is_resolved() and root.get_absolute_href() == source:
            catalog.set_root(catalog)
        for item in catalog.get_items(recursive=True):
            location = item.get_self_href() or source
            items.append(
                absolute_item(item.to_dict(include_self_link=False, transform_hrefs=False), location)
            )
    except Exception as err:
        raise _read_failure(f"{what}: STAC file", source, err, fix) from None
    return items


def _search_items(opts: StacOptions) -> list[dict[str, Any]]:
    """The items a STAC API returns for the search (one more than max_items, to know whether more exist)."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    api = opts.api or ""
    what = f"{opts.option}.api"
    fix = f"check {what} and the network (a frozen copy of an earlier search is reused offline)."
    io = StacApiIO(timeout=TIMEOUT, max_retries=_retry())
    with warnings.catch_warnings(record=True) as caught, io.session, _quiet_retries():
        warnings.simplefilter("always")
        try:
            client = Client.open(api, stac_io=io)
        except Exception as err:
            raise _read_failure(f"{what}: STAC API", api, err, fix) from None
        search_links = [link for link in client.links if link.rel == "search"]
        if not search_links or not any("item-search" in uri for uri in client.get_conforms_to()):
            raise GeosegError(
                f"{what} '{shown_url(api)}' is not a STAC API with item search (no search link or no "
                f"item-search in conformsTo); for a static catalog use {opts.option}.source instead."
            )
        methods = {str(link.extra_fields.get("method") or "GET").upper() for link in search_links}
        search_url = search_links[0].get_absolute_href() or api
        try:
            search = client.search(
                method="POST" if "POST" in methods else "GET",
                max_items=opts.max_items + 1, limit=min(opts.max_items + 1, PAGE_LIMIT),
                collections=list(opts.collections) if opts.collections else None,
                ids=list(opts.ids) if opts.ids else None,
                bbox=list(opts.bbox) if opts.bbox else None, intersects=opts.intersects,
                datetime=opts.datetime, query=opts.query,
            )  # fmt: skip
            found = list(search.items_as_dicts())
        except Exception as err:
            raise _read_failure(f"{what}: STAC API search", search_url, err, fix) from None
    for warning in caught:
        log.warning("%s '%s': %s", what, shown_url(api), warning.message)
    return [absolute_item(item, search_url) for item in found if isinstance(item, Mapping)]


def _read_frozen(path: str, opts: StacOptions) -> list[dict[str, Any]]:
    fix = f"delete it or set {opts.option}.refresh=true to search again."
    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except (OSError, ValueError) as err:
        raise GeosegError(f"frozen STAC items '{path}' cannot be read ({first_line(err)}); {fix}") from None
    features = d.get("features") if isinstance(d, Mapping) else None
    if not isinstance(features, list) or not features or not all(isinstance(f, Mapping) for f in features):
        raise GeosegError(f"frozen STAC items '{path}' is not an ItemCollection with items; {fix}")
    return features


def stac_given(value: Mapping[str, Any] | None) -> bool:
    """Whether a ``data.stac`` mapping names a catalog (its ``api`` or ``source`` is set)."""
    return bool(value) and bool(value.get("api") or value.get("source"))


def frozen_path(opts: StacOptions, cache_dir: str | os.PathLike) -> str:
    """Where :func:`resolve_items` freezes the items of ``opts``: ``cache_dir/stac-<hash>.json``."""
    return os.path.join(os.fspath(cache_dir), f"stac-{opts.digest()}.json")


def resolve_items(opts: StacOptions, cache_dir: str | os.PathLike) -> tuple[list[dict[str, Any]], str]:
    """The items of ``opts`` (plain STAC Item dicts, asset hrefs absolute, sorted by id and datetime) and
    the path of their frozen copy, ``cache_dir/stac-<hash>.json``: read from it when it exists (unless
    ``opts.refresh``), else found and frozen there."""
    path = frozen_path(opts, cache_dir)
    local = opts.source is not None and not is_remote(opts.source)  # read again: an edit is seen at once
    if os.path.exists(path) and not opts.refresh and not local:
        items = _read_frozen(path, opts)
        log.info("%s: reused %d frozen items from %s; %s.refresh=true searches again",
                 opts.option, len(items), path, opts.option)  # fmt: skip
        return sorted(items, key=_sort_key), path
    if opts.api:
        found = _search_items(opts)
        if len(found) > opts.max_items:
            found = found[: opts.max_items]
            log.warning(
                "%s: more than %s.max_items=%d items match in %s; the first %d the API returned are used. "
                "Narrow the search or raise %s.max_items.",
                opts.option, opts.option, opts.max_items, opts.where, opts.max_items, opts.option,
            )  # fmt: skip
        items = sorted(found, key=_sort_key)
    else:
        every = _static_items(opts)
        if not every:
            raise GeosegError(
                f"{opts.option}.source '{opts.where}' holds no items; for a STAC API (or one of its "
                f"collections) set {opts.option}.api to the API's URL and {opts.option}.collections instead."
            )
        items = sorted((i for i in every if item_matches(i, opts)), key=_sort_key)
        if len(items) > opts.max_items:
            log.warning(
                "%s: %d items match in %s, more than %s.max_items=%d; the first %d by id are used. "
                "Narrow the search or raise %s.max_items.",
                opts.option, len(items), opts.where, opts.option, opts.max_items, opts.max_items, opts.option,
            )  # fmt: skip
            items = items[: opts.max_items]
    if not items:
        raise GeosegError(
            f"{opts.option}: no STAC items found in '{opts.where}' ({opts.describe()}); widen "
            f"{opts.option}.bbox/datetime/query or check {opts.option}.collections."
        )
    record = dict(opts.search_key(), api=shown_url(opts.api) if opts.api else None)
    frozen = {"type": "FeatureCollection", "features": items, "geoseg:search": record}
    atomic_write_text(path, json.dumps(frozen, indent=1) + "\n", what="frozen STAC items")
    log.info("%s: searched %d items from %s; frozen in %s", opts.option, len(items), opts.where, path)
    return items, path


# --- items -> scenes -----------------------------------------------------------------------------------


def _bands(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """An asset's band descriptions: STAC 1.1 ``bands`` or the eo extension's ``eo:bands``."""
    bands = asset.get("bands") or asset.get("eo:bands") or []
    return [b for b in bands if isinstance(b, Mapping)] if isinstance(bands, list) else []


def _band_names(band: Mapping[str, Any]) -> set[str]:
    names = (band.get("name"), band.get("common_name"), band.get("eo:common_name"))
    return {n.casefold() for n in names if isinstance(n, str)}


def find_asset(item: Mapping[str, Any], name: str) -> str | None:
    """The key of the asset of ``item`` that ``name`` (a data.files entry) names: the key itself, else the
    one single-band asset whose band name or common name is ``name`` (``B04`` -> ``red``)."""
    assets = item.get("assets") or {}
    if name in assets:
        return name
    hits = [
        k
        for k, a in assets.items()
        if len(bands := _bands(a)) == 1 and name.casefold() in _band_names(bands[0])
    ]
    if len(hits) > 1:
        raise GeosegError(
            f"STAC item '{item.get('id')}': data.files '{name}' is the band name of assets {sorted(hits)}; "
            "list the asset key instead."
        )
    return hits[0] if hits else None


def raster_assets(item: Mapping[str, Any]) -> list[str]:
    """Keys of an item's raster assets (a GeoTIFF/JP2 media type, or the role data)."""
    assets = item.get("assets") or {}
    return [
        k for k, a in assets.items()
        if str(a.get("type") or "").startswith(RASTER_TYPES) or "data" in (a.get("roles") or [])
    ]  # fmt: skip


def _asset_href(item: Mapping[str, Any], name: str, where: str) -> str:
    key = find_asset(item, name)
    if key is None:
        assets = item.get("assets") or {}
        inside = [k for k, a in assets.items() if any(name.casefold() in _band_names(b) for b in _bands(a))]
        hint = ""
        if inside:
            k = inside[0]
            index = next(i for i, b in enumerate(_bands(assets[k]), 1) if name.casefold() in _band_names(b))
            hint = f"; asset '{k}' holds it as band {index}: use {{name: {k}, bands: [{index}]}}"
        raise GeosegError(
            f"STAC item '{item.get('id')}' has no asset '{name}' ({where}); its assets are "
            f"{sorted(assets)}{hint}. List asset keys every item has, or leave the item out "
            "(data.stac.ids/query)."
        )
    href = item["assets"][key].get("href") if isinstance(item["assets"][key], Mapping) else None
    if not isinstance(href, str) or not href:
        raise GeosegError(f"STAC item '{item.get('id')}': asset '{key}' ({where}) has no href.")
    return href


def item_scenes(
    items: Sequence[Mapping[str, Any]],
    files: Sequence[FileEntry] | None,
    label_asset: str | None = None,
    labels: str | None = None,
    root: str = ".",
) -> list[Scene]:
    """Each item as (hrefs of the assets named by ``files`` in that order, its label or None, its id).

    The label is the ``label_asset`` asset's href, else ``labels`` formatted with ``{item}`` (the item id)
    and ``{collection}`` (a relative path is joined to ``root``, a URL is kept), else None.
    """
    if not files:
        keys = raster_assets(items[0]) if items else []
        first = items[0].get("id") if items else None
        raise GeosegError(
            "data.files must list the asset keys to stack from each STAC item, e.g. "
            f"data.files=[B04,B03,B02] "
            f"(item '{first}' has raster assets {keys})."
        )
    scenes = []
    for item in items:
        hrefs = tuple(_asset_href(item, e.name, f"data.files[{i}]") for i, e in enumerate(files))
        label = None
        if label_asset is not None:
            if label_asset not in (item.get("assets") or {}):
                raise GeosegError(
                    f"STAC item '{item.get('id')}' has no asset '{label_asset}' (data.stac.label_asset); "
                    f"its assets are {sorted(item.get('assets') or {})}."
                )
            label = str(item["assets"][label_asset]["href"])
        elif labels is not None:
            try:
                label = labels.format(item=item.get("id"), collection=item.get("collection") or "")
            except (KeyError, IndexError, ValueError) as err:
                raise GeosegError(
                    f"label template '{labels}' uses {err}; for STAC items use {{item}} or {{collection}}."
                ) from None
            label = label if _is_url(label) or os.path.isabs(label) else os.path.join(root, label)
        scenes.append((hrefs, label, str(item.get("id"))))
    return scenes


def _raster_bands(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    bands = asset.get("raster:bands") or asset.get("bands") or []
    return [b for b in bands if isinstance(b, Mapping)] if isinstance(bands, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return float(value) if is_real(value) or (isinstance(value, float) and value != value) else None


def _declared(items: Sequence[Mapping[str, Any]], entry: FileEntry, read: Any) -> list[Any]:
    """``read(asset, bands)`` per item for the asset ``entry`` names (bands: those entry.bands picks)."""
    out = []
    for item in items:
        key = find_asset(item, entry.name)
        asset = (item.get("assets") or {}).get(key) if key else None
        if asset is None:
            out.append(None)
            continue
        bands = _raster_bands(asset)
        if entry.bands is not None:
            bands = [bands[i - 1] for i in entry.bands if i - 1 < len(bands)]
        out.append(read(asset, bands))
    return out


def _agreed(values: list[Any], entry: FileEntry, what: str) -> Any:
    """The one value every item declares, else None (with a warning when they disagree)."""
    distinct = {json.dumps(v) for v in values}  # nan-safe: json writes NaN
    if len(distinct) == 1:
        return values[0]
    shown = sorted(distinct)[:4]
    log.warning("STAC assets '%s' (data.files) declare different %s across items (%s); none is applied",
                entry.name, what, ", ".join(shown))  # fmt: skip
    return None


def asset_nodata(items: Sequence[Mapping[str, Any]], files: Sequence[FileEntry]) -> dict[str, float | None]:
    """Per ``files`` entry, the nodata its assets declare (``raster:bands``, STAC 1.1 ``bands`` or the
    asset's ``nodata``) when every item agrees; None when none declares one or they differ (warned)."""

    def read(asset: Mapping[str, Any], bands: list[Mapping[str, Any]]) -> float | None:
        values = {json.dumps(_number(b.get("nodata"))) for b in bands if "nodata" in b}
        if not values and "nodata" in asset:
            return _number(asset["nodata"])
        return json.loads(values.pop()) if len(values) == 1 else None

    out: dict[str, float | None] = {}
    for entry in files:
        out[entry.name] = _agreed(_declared(items, entry, read), entry, "nodata")
    return out


def asset_scaling(
    items: Sequence[Mapping[str, Any]], files: Sequence[FileEntry]
) -> dict[str, tuple[float, float] | None]:
    """Per ``files`` entry, the (scale, offset) its assets' raster bands declare when every item agrees
    (scale 1 and offset 0 fill in for a missing one); None when none declares them or they differ."""

    def read(asset: Mapping[str, Any], bands: list[Mapping[str, Any]]) -> list[float] | None:
        pairs = set()
        for band in bands:
            scale = band.get("scale", band.get("raster:scale"))
            offset = band.get("offset", band.get("raster:offset"))
            if scale is not None or offset is not None:
                pairs.add(
                    (
                        _number(scale) if scale is not None else 1.0,
                        _number(offset) if offset is not None else 0.0,
                    )
                )
        return list(pairs.pop()) if len(pairs) == 1 else None

    out: dict[str, tuple[float, float] | None] = {}
    for entry in files:
        value = _agreed(_declared(items, entry, read), entry, "scale/offset")
        out[entry.name] = None if value is None else (value[0], value[1])
    return out


def frozen_record(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a run records of its items: id, collection, datetime and every asset's href."""
    out = []
    for item in items:
        props = item.get("properties") or {}
        assets = item.get("assets") or {}
        out.append({
            "id": item.get("id"), "collection": item.get("collection"),
            "datetime": props.get("datetime") or props.get("start_datetime"),
            "assets": {k: a.get("href") for k, a in assets.items() if isinstance(a, Mapping)},
        })  # fmt: skip
    return out
