"""URLs as they may be printed, logged or written: without the user info and the query string that hold
a signed URL's token or a SAS key (replaced by ``?…``). Plain text functions, used by every module that
shows a path, and by :func:`geoseg.errors.user_message` for every printed error."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
# "?token=…" after a bare file name: GDAL names a dataset by its last path part, query string included
_QUERY = re.compile(r"\?[^\s'\"<>?=/]+=[^\s'\"<>]*")


def shown(path: str | os.PathLike) -> str:
    """``path`` as it may be printed or logged: a URL without user info and without its query string
    (a signed URL's token, a SAS key), which is replaced by ``?…``."""
    text = str(path)
    if SCHEME.match(text) is None:
        return text
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


def without_secrets(text: str) -> str:
    """``text`` with every URL in it as :func:`shown` shows it (no query string, no user info), and any
    other query string (``name.tif?token=…``) replaced by ``?…``."""
    return _QUERY.sub("?…", _URL.sub(_shown_if_secret, text))


def _shown_if_secret(match: re.Match[str]) -> str:
    """A URL found in a text as :func:`shown` shows it, when it has a query string or user info."""
    url = match.group()
    return shown(url) if "?" in url or "@" in url else url
