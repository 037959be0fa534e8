"""STAC items found and frozen: a STAC API search (pystac-client) or a static catalog (pystac), filtered,
made absolute, and written once to ``<cache_dir>/stac-<hash>.json`` (a STAC ItemCollection).

A later run with the same search reads that file instead of searching, so it repeats exactly after the
catalog changes, and works offline (``data.stac.refresh=true`` searches again). Network failures are one
line naming the URL without its query string; urllib3's retry warnings (which print it) are silenced.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

from geoseg.config import is_real
from geoseg.data.remote import file_url_path, is_remote, is_url, shown
from geoseg.data.stac_options import StacOptions, as_utc, interval_of
from geoseg.errors import GeosegError, first_line
from geoseg.io import atomic_write_text
from geoseg.log_format import quieted

log = logging.getLogger(__name__)

TIMEOUT = (10.0, 60.0)  # seconds to connect, to wait for a response
PAGE_LIMIT = 250  # items asked for per page of a search (the API may send fewer)


def _scrub(text: str) -> str:
    """Query strings and credentials out of an error text."""
    text = re.sub(r"//[^/\s:@'\"]+:[^/\s@'\"]*@", "//", text)
    return re.sub(r"\?[^\s'\")]*", "", text)


def absolute_href(href: str, base: str | None) -> str:
    """``href`` made absolute against ``base`` (the URL or path of the JSON it was read from)."""
    href = file_url_path(href)
    if is_url(href) or os.path.isabs(href) or not base:
        return href
    base = file_url_path(base)
    if is_url(base):
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
    return GeosegError(f"{what} '{shown(_failed_href(err, url))}' could not be read ({_cause(err)}); {fix}")


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
            if not is_url(href):
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
            out.append(as_utc(isoparse(text)) if isinstance(text, str) else None)
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
        start, end = interval_of(opts.datetime)
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
    if not is_url(source) and not os.path.exists(source):
        raise GeosegError(f"{what} not found: '{source}'; {fix}")
    io = _static_io()
    try:
        with quieted("urllib3.connectionpool", logging.ERROR):
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
            raise GeosegError(f"{what} '{shown(source)}' is a FeatureCollection without a list of items.")
        return [absolute_item(f, source) for f in features]
    if kind not in ("Catalog", "Collection"):
        raise GeosegError(
            f"{what} '{shown(source)}' is not a STAC Item, ItemCollection, Catalog or Collection "
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
    with (
        warnings.catch_warnings(record=True) as caught,
        io.session,
        quieted("urllib3.connectionpool", logging.ERROR),
    ):
        warnings.simplefilter("always")
        try:
            client = Client.open(api, stac_io=io)
        except Exception as err:
            raise _read_failure(f"{what}: STAC API", api, err, fix) from None
        search_links = [link for link in client.links if link.rel == "search"]
        if not search_links or not any("item-search" in uri for uri in client.get_conforms_to()):
            raise GeosegError(
                f"{what} '{shown(api)}' is not a STAC API with item search (no search link or no "
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
        log.warning("%s '%s': %s", what, shown(api), warning.message)
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
    record = dict(opts.search_key(), api=shown(opts.api) if opts.api else None)
    frozen = {"type": "FeatureCollection", "features": items, "geoseg:search": record}
    atomic_write_text(path, json.dumps(frozen, indent=1) + "\n", what="frozen STAC items")
    log.info("%s: searched %d items from %s; frozen in %s", opts.option, len(items), opts.where, path)
    return items, path


# --- items -> scenes -----------------------------------------------------------------------------------
