"""Remote paths: URLs (``https://``, ``s3://``, ``gs://``, ``az://``) and GDAL ``/vsi…/`` paths.

geoseg reads them through GDAL's virtual file systems, as rasterio and pyogrio pass them on: a
COG is read by HTTP range requests, block by block, never downloaded whole. Credentials come from
each store's own environment variables and config files (``AWS_*`` and ``~/.aws``, ``GOOGLE_*``,
``AZURE_*``; GDAL reads them), never from geoseg's config, so they are never printed or written to
a run folder. URLs are shown without their query string (a signed URL's token) or user info.

This module knows what a remote path is, how to join and name it, and the GDAL options for chip
reads over a network (:func:`remote_gdal_options`); :mod:`geoseg.data.rasters` turns a failed
open into one line with :func:`remote_error`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from geoseg.url_text import SCHEME, shown, without_secrets

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # after GDAL's own retries of 5xx answers: dropped and cut transfers

SCHEMES = ("http", "https", "s3", "gs", "gcs", "az", "azure", "oss", "file")

# Options for chip reads over a network (GDAL's /vsicurl/, /vsis3/, /vsigs/, /vsiaz/). They only
# act on network reads; a value the user set in the environment wins (GDAL reads the environment).
REMOTE_GDAL_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing (one request) per open
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # adjacent blocks of one read in one request
    "GDAL_HTTP_MULTIPLEX": "YES",  # parallel range requests share one HTTP/2 connection
    "GDAL_HTTP_VERSION": "2TLS",  # HTTP/2 where the server offers it over TLS, else HTTP/1.1
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",  # a COG's header (IFDs, tile offsets) in the first request
    "VSI_CACHE": "TRUE",  # per open file: blocks fetched once stay in memory
    "VSI_CACHE_SIZE": str(64 * 2**20),
    "GDAL_HTTP_MAX_RETRY": "4",  # 429 and 5xx answers: retried by GDAL, with a growing delay
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",  # never a hang: a dead server fails in seconds
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_LOW_SPEED_TIME": "30",  # a stalled transfer (under 1 byte/s for 30 s) fails
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    "CPL_VSIL_CURL_CHUNK_SIZE": str(64 * 1024),
    # every process keeps the ranges it fetched in a bounded LRU, so later epochs re-read chips from
    # memory (128 MB per reading process; set the variable to change it)
    "CPL_VSIL_CURL_CACHE_SIZE": str(128 * 2**20),
}


def is_remote(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is a URL or a GDAL virtual path rather than a local file."""
    if path is None:
        return False
    text = str(path)
    match = SCHEME.match(text)
    if match is not None:
        return match.group(1).lower() in SCHEMES and match.group(1).lower() != "file"
    return text.startswith("/vsi")


def local_or_remote_abspath(path: str) -> str:
    """An absolute local path, or the remote path unchanged (for cache keys and comparisons)."""
    return path if is_remote(path) else os.path.abspath(path)


def join(base: str, path: str) -> str:
    """``path`` relative to ``base`` (a folder or a URL prefix); an absolute or remote ``path`` is
    kept as it is."""
    if is_remote(path) or os.path.isabs(path):
        return path
    if is_remote(base):
        return posixpath.join(base, path)
    return os.path.join(base, path)


def parent(path: str) -> str:
    """The folder (or URL prefix) of ``path``."""
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(path)


def file_name(path: str) -> str:
    """The last part of ``path`` (a URL's query string left out)."""
    if SCHEME.match(path) is not None:
        return posixpath.basename(urlsplit(path).path)
    return os.path.basename(path)


def stem(path: str) -> str:
    """:func:`file_name` without its suffix."""
    name = file_name(path)
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def is_url(href: str) -> bool:
    """Whether ``href`` is a URL with a host (``https://h/x``, ``file://h/x``; not ``C:/x``)."""
    parts = urlsplit(href)
    return bool(parts.scheme) and bool(parts.netloc) and len(parts.scheme) > 1  # "C:" is a drive


def file_url_path(href: str) -> str:
    """``file:///x/y.tif`` as ``/x/y.tif`` (GDAL reads paths); other hrefs as they are."""
    return unquote(urlsplit(href).path) if href.startswith("file://") else href


def has_wildcard(path: str) -> bool:
    """Whether ``path`` holds a glob wildcard (remote paths cannot be listed by a glob). A URL's host and
    query string are not looked at: the ``?`` of a signed URL's ``?token=…`` is no wildcard."""
    if SCHEME.match(path) is not None:
        path = urlsplit(path).path
    elif is_remote(path):
        path = path.split("?", 1)[0]
    return any(c in path for c in "*?[")


def configure_remote_reads() -> dict[str, str]:
    """Apply :data:`REMOTE_GDAL_OPTIONS` in this process where neither the environment nor the program
    (``rasterio.Env``, ``set_gdal_config``) set the option, and show URLs in GDAL's log messages without
    their query string (:func:`hide_url_secrets`): cheap and idempotent, called before remote reads in
    any process, the main one or a DataLoader worker. Returns the options it set."""
    from rasterio._env import get_gdal_config
    from rasterio.env import set_gdal_config

    hide_url_secrets()
    applied = {k: v for k, v in remote_gdal_options().items() if get_gdal_config(k, normalize=False) is None}
    for key, value in applied.items():
        set_gdal_config(key, value, normalize=False)
    return applied


# the loggers GDAL's messages reach Python through (rasterio's error handler), which name the URL in full
GDAL_LOGGERS = ("rasterio._env", "rasterio._err", "rasterio._io", "rasterio._base", "rasterio.env")


class _HideUrlSecrets(logging.Filter):
    """A log record's message with its URLs shown by :func:`without_secrets`; the HTTP status of an error
    GDAL logs is kept for :func:`read_cause` (GDAL's exception for it often names none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        found = _GDAL_HTTP_STATUS.search(message)
        if found is not None and found.group(1) in _CAUSES:
            global _last_status
            _last_status = (time.monotonic(), found.group(1))
        hidden = without_secrets(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True


def hide_url_secrets() -> None:
    """Show URLs in GDAL's log messages (a 503 retried: "HTTP error code: 503 - https://…?sig=…") without
    their query string or user info, as geoseg's own messages do, and keep the HTTP status they name
    (:func:`read_cause`); idempotent."""
    for name in GDAL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideUrlSecrets) for f in logger.filters):
            logger.addFilter(_HideUrlSecrets())


def remote_gdal_options(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """:data:`REMOTE_GDAL_OPTIONS` less those set in the environment (``environ``, default os.environ)."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in REMOTE_GDAL_OPTIONS.items() if k not in env}


_HTTP_CODE = re.compile(r"HTTP (?:error |response )?code:?\s*(\d{3})|\b(\d{3})\b(?= \w)")
_GDAL_HTTP_STATUS = re.compile(r"HTTP (?:error |response )?code:?\s*(\d{3})")  # GDAL's own words
_CAUSES = {
    "400": "HTTP 400, bad request",
    "401": "HTTP 401, not authorised: check the store's credentials",
    "403": "HTTP 403, access denied: check the store's credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE, "
    "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT...), or AWS_NO_SIGN_REQUEST=YES for a "
    "public bucket, or whether a signed URL has expired",
    "404": "HTTP 404, not found: check the URL",
    "416": "HTTP 416, the file is shorter than its header says",
    "429": "HTTP 429, too many requests: the server kept throttling after retries",
    "500": "HTTP 500, server error after retries",
    "502": "HTTP 502, bad gateway after retries",
    "503": "HTTP 503, service unavailable after retries",
    "504": "HTTP 504, gateway timeout after retries",
}


# (when, status) of the last HTTP error GDAL logged in this process, in any thread: GDAL shares one download
# between the handles that wait for the same range, so the thread that fails may not be the one that logged
_last_status: tuple[float, str] | None = None


def _status(message: str) -> str | None:
    """The first HTTP status of :data:`_CAUSES` that ``message`` names, or None."""
    for match in _HTTP_CODE.finditer(message):
        value = match.group(1) or match.group(2)
        if value in _CAUSES:
            return value
    return None


def read_cause(err: BaseException, since: float) -> str:
    """:func:`remote_cause` of ``err`` (its causes' messages too), or the cause of the HTTP status GDAL
    logged since ``since`` (``time.monotonic()``) where the exception names none: a COG whose header read
    was answered 503 fails as "not recognized as being in a supported file format"."""
    seen = _last_status
    return remote_cause(error_text(err), seen[1] if seen is not None and seen[0] >= since else None)


def remote_cause(message: str, status: str | None = None) -> str:
    """A short cause for a GDAL error on a remote file, without any URL (which may hold a secret);
    ``status``: an HTTP status known otherwise, for a message that names none."""
    code = _status(message) or (status if status in _CAUSES else None)
    if code is not None:
        return _CAUSES[code]
    low = message.lower()
    if "credentials" in low or "aws_secret_access_key" in low or "access key" in low:
        return (
            "no credentials for the store: set them as its tools expect (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_ACCOUNT "
            "and a key or SAS), or AWS_NO_SIGN_REQUEST=YES for a public bucket"
        )
    if "timed out" in low or "timeout" in low:
        return "the server did not answer in time"
    if "could not resolve" in low or "couldn't resolve" in low:
        return "the host name does not resolve: check the URL and the network"
    if "connection refused" in low or "couldn't connect" in low or "failed to connect" in low:
        return "the server refused the connection: check the URL and that the server is up"
    if "ssl" in low or "certificate" in low:
        return "the TLS connection failed (certificate not trusted?): check CURL_CA_BUNDLE"
    if "not recognized as being in a supported file format" in low or "not recognised" in low:
        return "GDAL does not recognise its format"
    if "ireadblock failed" in low or "tiffread" in low:
        return "a block could not be read: the transfer was cut off, or the file is truncated"
    first = without_secrets(message.splitlines()[0] if message else "")
    return re.sub(r"\S+://\S+|/vsi\w+/\S+", "<url>", first)[:160].rstrip(".")


def forget(path: str) -> bool:
    """Make GDAL drop what it cached in this process about the remote file ``path`` (its size, the
    ranges it fetched, a failed open), so that the next open and read ask the server again.

    Without it a retry can never succeed where GDAL keeps a failure: a body cut off at the end of a
    file is taken as the file's end, and a failed open is failed again without a request. Returns
    False where GDAL's ``VSICurlPartialClearCache`` cannot be reached (the retry then goes on).
    """
    clear = _partial_clear_cache()
    if clear is None or not is_remote(path):
        return False
    from rasterio._path import _parse_path

    clear(_parse_path(str(path)).as_vsi().encode())
    return True


@functools.cache
def _partial_clear_cache() -> Callable[[bytes], None] | None:
    """GDAL's ``VSICurlPartialClearCache`` in the libgdal rasterio loaded (looked up through rasterio's
    extension module, whose dependencies the dynamic loader searches), or None."""
    import rasterio._env

    try:
        clear = ctypes.CDLL(rasterio._env.__file__).VSICurlPartialClearCache
    except (OSError, AttributeError):
        return None
    clear.argtypes, clear.restype = [ctypes.c_char_p], None
    return clear


def error_text(err: BaseException) -> str:
    """The messages of ``err`` and of the errors it was raised from, one a line: rasterio's "Read failed.
    See previous exception for details." says nothing, GDAL's message is in its cause."""
    lines: list[str] = []
    seen: BaseException | None = err
    while seen is not None and len(lines) < 5:
        text = str(seen).strip()
        if text and "see previous exception" not in text.lower():
            lines.append(text)
        seen = seen.__cause__ or seen.__context__
    return "\n".join(lines)


def with_retries(
    read: Callable[[], T], reset: Callable[[], None], path: str, what: str,
    delays: tuple[float, ...] | None = None,
) -> T:  # fmt: skip
    """``read()``, tried again after each of ``delays`` (seconds; :data:`RETRY_DELAYS_S` by default) when it
    raises, with ``reset()`` (close the file, so the next try opens it afresh) in between; then one line
    naming ``path``.

    GDAL retries 429/5xx answers itself (``GDAL_HTTP_MAX_RETRY``); this covers what it does not: a
    dropped connection, a cut-off body, a timeout. Between tries GDAL forgets what it cached about the
    file (:func:`forget`). Bounded: at most ``len(delays) + 1`` tries.
    """
    from rasterio.errors import RasterioError

    from geoseg.errors import GeosegError

    delays = RETRY_DELAYS_S if delays is None else delays  # looked up now: a test may shorten them
    for attempt, delay in enumerate((*delays, None)):
        started = time.monotonic()
        try:
            return read()
        except (RasterioError, GeosegError, OSError) as err:
            cause = read_cause(err, started)
            if delay is None:
                raise GeosegError(
                    f"cannot read {what} of '{shown(path)}' after {attempt + 1} tries ({cause}); check the "
                    "network and the file."
                ) from None
            log.warning("reading '%s' failed (%s); trying again in %.1f s", shown(path), cause, delay)
            reset()
            forget(path)
            time.sleep(delay)
    raise AssertionError("unreachable")
