"""A minimal STAC API on 127.0.0.1 for tests: ``with StacApiServer(items) as api: Client.open(api.url)``.

Written by hand because stac-fastapi needs a database backend (pgstac or Elasticsearch); this is a real HTTP
server (``http.server.ThreadingHTTPServer``) speaking the STAC API item-search protocol that pystac-client
talks to: a landing page with ``conformsTo`` and search links (GET and POST), ``/conformance``,
``/collections``, ``/collections/<id>`` and ``/search`` filtering its items by ``collections``, ``ids``,
``bbox``, ``intersects``, ``datetime`` and ``query`` (the query extension: ``{"prop": {"lt": 20}}``), in
pages of ``page_size`` items linked by ``next`` (so a client's paging is exercised). It counts the requests
it answers. ``static_dir`` is served under ``/static/`` for static catalogs read over HTTP. It binds a free
port, answers from daemon threads and shuts down with bounded joins: a test never hangs on it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONFORMS_TO = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
QUERY_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")


class BadRequest(ValueError):
    """A search parameter the server cannot read (answered with HTTP 400)."""


def _time(text: str | None) -> datetime | None:
    if text in (None, "", ".."):
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))  # type: ignore[union-attr]
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _compare(have: Any, op: str, want: Any) -> bool:
    try:
        return {
            "eq": lambda: have == want, "neq": lambda: have != want, "lt": lambda: have < want,
            "lte": lambda: have <= want, "gt": lambda: have > want, "gte": lambda: have >= want,
            "in": lambda: have in want,
        }[op]()  # fmt: skip
    except TypeError:  # a number compared with a string matches nothing
        return False


def matches(item: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Whether ``item`` passes the search ``params`` (already parsed from GET or POST)."""
    props = item.get("properties", {})
    if params.get("ids") and item["id"] not in params["ids"]:
        return False
    if params.get("collections") and item.get("collection") not in params["collections"]:
        return False
    if params.get("bbox"):
        minx, miny, maxx, maxy = params["bbox"]
        bx0, by0, bx1, by1 = item["bbox"]
        if bx0 > maxx or bx1 < minx or by0 > maxy or by1 < miny:
            return False
    if params.get("intersects"):
        from shapely.geometry import shape

        if not shape(item["geometry"]).intersects(shape(params["intersects"])):
            return False
    if params.get("datetime"):
        parts = params["datetime"].split("/")
        start, end = _time(parts[0]), _time(parts[-1])
        first = _time(props.get("start_datetime") or props.get("datetime"))
        last = _time(props.get("end_datetime") or props.get("datetime"))
        if (start and last < start) or (end and first > end):
            return False
    for prop, ops in (params.get("query") or {}).items():
        for op, want in ops.items():
            if op not in QUERY_OPS:
                raise BadRequest(f"unknown query operator {op}")
            if prop not in props or not _compare(props[prop], op, want):
                return False
    return True


def _get_params(query: str) -> dict[str, Any]:
    """GET /search parameters as the POST body has them."""
    raw = {k: v[-1] for k, v in parse_qs(query).items()}
    params: dict[str, Any] = {}
    try:
        for key in ("ids", "collections"):
            if key in raw:
                params[key] = raw[key].split(",")
        if "bbox" in raw:
            params["bbox"] = [float(v) for v in raw["bbox"].split(",")]
        for key in ("intersects", "query"):
            if key in raw:
                params[key] = json.loads(raw[key])
        for key in ("datetime", "token"):
            if key in raw:
                params[key] = raw[key]
        if "limit" in raw:
            params["limit"] = int(raw["limit"])
    except ValueError as err:
        raise BadRequest(str(err)) from None
    return params


class StacApiServer:
    """The server; ``url`` is its landing page, ``requests`` how many requests it has answered."""

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        page_size: int = 2,
        conforms_to: Sequence[str] | None = None,
        static_dir: str | Path | None = None,
        search_methods: Sequence[str] = ("GET", "POST"),
    ) -> None:
        self.items = [dict(i) for i in items]
        self.page_size = page_size
        self.conforms_to = list(CONFORMS_TO if conforms_to is None else conforms_to)
        self.static_dir = None if static_dir is None else Path(static_dir).resolve()
        self.search_methods = tuple(search_methods)  # what the landing page advertises and /search answers
        self.requests = 0
        self.paths: list[str] = []  # method and path of every request, in order
        self._lock = threading.Lock()
        self._port: int | None = None  # kept after exit, for messages that name the URL
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._port is not None, "use the server inside `with StacApiServer(...) as api:`"
        return f"http://127.0.0.1:{self._port}/"

    def __enter__(self) -> StacApiServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a client that stops sending does not hold a thread

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._answer(self, "GET", None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server._answer(self, "POST", self.rfile.read(length) if length else b"")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is None:
            return
        stopper = threading.Thread(target=self._httpd.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout=5)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    # --- responses ---

    def _answer(self, handler: BaseHTTPRequestHandler, method: str, body: bytes | None) -> None:
        parts = urlsplit(handler.path)
        with self._lock:
            self.requests += 1
            self.paths.append(f"{method} {parts.path}")
        try:
            status, payload, kind = self._route(method, parts.path, parts.query, body)
        except BadRequest as err:
            status, payload, kind = 400, {"code": "BadRequest", "description": str(err)}, "application/json"
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _route(
        self, method: str, path: str, query: str, body: bytes | None
    ) -> tuple[int, dict[str, Any] | bytes, str]:
        base = self.url.rstrip("/")
        js = "application/json"
        if path == "/" and method == "GET":
            return 200, self._landing(base), js
        if path == "/conformance":
            return 200, {"conformsTo": self.conforms_to}, js
        if path == "/collections":
            return 200, {"collections": self._collections(base), "links": []}, js
        if path.startswith("/collections/"):
            wanted = path.split("/")[2]
            found = [c for c in self._collections(base) if c["id"] == wanted]
            if found:
                return 200, found[0], js
        if path == "/search" and method not in self.search_methods:
            return 405, {"code": "MethodNotAllowed", "description": f"{method} /search"}, js
        if path == "/search":
            if method == "POST":
                try:
                    params = json.loads(body or b"{}")
                except ValueError:
                    raise BadRequest("the body is not JSON") from None
            else:
                params = _get_params(query)
            return 200, self._search(base, method, params), "application/geo+json"
        if path.startswith("/static/") and self.static_dir is not None:
            file = (self.static_dir / path[len("/static/") :]).resolve()
            if file.is_relative_to(self.static_dir) and file.is_file():
                return 200, file.read_bytes(), js
        if path == "/not-json":
            return 200, b"<html><body>Welcome to nginx</body></html>", "text/html"
        return 404, {"code": "NotFound", "description": f"no such path {path}"}, js

    def _landing(self, base: str) -> dict[str, Any]:
        links = [
            {"rel": "self", "href": f"{base}/", "type": "application/json"},
            {"rel": "root", "href": f"{base}/", "type": "application/json"},
            {"rel": "conformance", "href": f"{base}/conformance", "type": "application/json"},
            {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
        ]
        for method in self.search_methods:
            links.append(
                {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": method}
            )
        return {
            "type": "Catalog", "id": "test-api", "stac_version": "1.0.0", "description": "geoseg test API",
            "conformsTo": self.conforms_to, "links": links,
        }  # fmt: skip

    def _collections(self, base: str) -> list[dict[str, Any]]:
        ids = sorted({i["collection"] for i in self.items if i.get("collection")})
        extent = {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}
        out = []
        for c in ids:
            links = [{"rel": "self", "href": f"{base}/collections/{c}"}, {"rel": "root", "href": f"{base}/"}]
            out.append({"type": "Collection", "id": c, "stac_version": "1.0.0", "description": c,
                        "license": "proprietary", "extent": extent, "links": links})  # fmt: skip
        return out

    def _search(self, base: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        hits = [i for i in self.items if matches(i, params)]
        limit = min(int(params.get("limit") or self.page_size), self.page_size)
        try:
            start = int(params.get("token") or 0)
        except ValueError:
            raise BadRequest("bad token") from None
        page = hits[start : start + limit]
        links: list[dict[str, Any]] = [{"rel": "root", "href": f"{base}/"}]
        if start + limit < len(hits):
            token = str(start + limit)
            if method == "POST":
                links.append({"rel": "next", "href": f"{base}/search", "method": "POST",
                              "body": {**params, "token": token}, "merge": False})  # fmt: skip
            else:
                links.append({"rel": "next", "href": f"{base}/search?{_get_query(params, token)}"})
        return {
            "type": "FeatureCollection", "features": page, "links": links,
            "numberMatched": len(hits), "numberReturned": len(page),
        }  # fmt: skip


def _get_query(params: Mapping[str, Any], token: str) -> str:
    """``params`` as a GET query string again, with the next page's token."""
    from urllib.parse import urlencode

    out: dict[str, str] = {}
    for key, value in params.items():
        if key in ("ids", "collections", "bbox"):
            out[key] = ",".join(str(v) for v in value)
        elif key in ("intersects", "query"):
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    out["token"] = token
    return urlencode(out)
