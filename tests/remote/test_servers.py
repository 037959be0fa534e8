"""The test servers are real and GDAL reads through them: HTTP, HTTPS (verified) and S3 on 127.0.0.1.

These pin down the servers' protocol (ranges, multipart, TLS, faults) and what GDAL 3.10 does over them:
range GETs, not whole files; a 503 retried when ``GDAL_HTTP_MAX_RETRY`` is set; dropped connections,
resets, truncated bodies and a stalled server ending in an error or a retry, never a hang or wrong data.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from servers.cog import cog_layout
from servers.gdal import clear_vsicurl_cache
from servers.range_http import RangeServer, iter_multipart, make_certificate, parse_ranges
from servers.s3 import BUCKET as S3_BUCKET
from servers.s3 import S3Server

LOCAL = "127.0.0.1"


def random_window(shape: tuple[int, int], seed: int, size: int = 96) -> Window:
    """A ``size``-pixel square window at a random place inside a (height, width) raster."""
    rng = np.random.default_rng(seed)
    h, w = min(size, shape[0]), min(size, shape[1])
    return Window(int(rng.integers(0, shape[1] - w + 1)), int(rng.integers(0, shape[0] - h + 1)), w, h)


def read_window(path: str | Path, window: Window) -> np.ndarray:
    """All bands of ``window`` of a raster (a local path or a URL rasterio opens)."""
    with rasterio.open(path) as ds:
        return ds.read(window=window)


def local_and_window(cog_root: Path, rel: str, seed: int) -> tuple[np.ndarray, Window]:
    """A random window of a local COG and its pixels, the reference for a remote read."""
    with rasterio.open(cog_root / rel) as ds:
        window = random_window(ds.shape, seed)
        return ds.read(window=window), window


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` (or the exception it raised) and the seconds it took."""
    start = time.monotonic()
    try:
        out: object = fn()
    except Exception as exc:  # the caller asserts on it
        out = exc
    return out, time.monotonic() - start


def url_path(url: str) -> str:
    """The path of a URL: with a unique alias (``/_n<k>/...``), a fault filter for that URL alone."""
    return urllib.parse.urlsplit(url).path


def error_chain(exc: BaseException) -> str:
    """An exception's message and those of its causes (rasterio wraps GDAL's errors), one string."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 10:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The range server speaks HTTP/1.1 ranges properly (checked with the standard library's client)


def _get(srv: RangeServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """One request on a fresh connection: (status, headers, body)."""
    conn = http.client.HTTPConnection(LOCAL, srv.port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_parse_ranges_follows_rfc_9110() -> None:
    assert parse_ranges("bytes=0-9", 100) == [(0, 9)]
    assert parse_ranges("bytes=90-", 100) == [(90, 99)]
    assert parse_ranges("bytes=-10", 100) == [(90, 99)]
    assert parse_ranges("bytes=-500", 100) == [(0, 99)]
    assert parse_ranges("bytes=95-200", 100) == [(95, 99)]
    assert parse_ranges("bytes=0-1, 5-6", 100) == [(0, 1), (5, 6)]
    assert parse_ranges("bytes=100-", 100) == [] and parse_ranges("bytes=-0", 100) == []
    assert parse_ranges("bytes=5-1", 100) is None and parse_ranges("items=0-1", 100) is None
    assert parse_ranges(None, 100) is None and parse_ranges("bytes=x-1", 100) is None


def test_range_server_answers_head_ranges_multipart_and_errors(http_server, cog_root, synthetic_cogs) -> None:
    rel = synthetic_cogs[1]
    data = (cog_root / rel).read_bytes()
    path = "/" + rel

    status, head, body = _get(http_server, path, method="HEAD")
    assert status == 200 and body == b"" and int(head["content-length"]) == len(data)
    assert head["accept-ranges"] == "bytes" and head["etag"] and head["last-modified"]

    for spec, first, last in [("bytes=10-19", 10, 19), ("bytes=-7", len(data) - 7, len(data) - 1),
                              (f"bytes={len(data) - 5}-", len(data) - 5, len(data) - 1)]:  # fmt: skip
        status, head, body = _get(http_server, path, {"Range": spec})
        assert status == 206 and body == data[first : last + 1]
        assert head["content-range"] == f"bytes {first}-{last}/{len(data)}"

    status, head, body = _get(http_server, path, {"Range": "bytes=0-3,100-149"})
    assert status == 206 and head["content-type"].startswith("multipart/byteranges; boundary=")
    parts = list(iter_multipart(body, head["content-type"]))
    assert parts == [(f"bytes 0-3/{len(data)}", data[:4]), (f"bytes 100-149/{len(data)}", data[100:150])]

    status, head, _ = _get(http_server, path, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and head["content-range"] == f"bytes */{len(data)}"
    status, _, body = _get(http_server, path, {"Range": "bytes=0-3", "If-Range": '"stale"'})
    assert status == 200 and body == data  # the client's copy is stale: all of it
    assert _get(http_server, "/_n77/" + rel)[2] == data  # a unique alias serves the same file
    assert _get(http_server, "/synthetic/missing.tif")[0] == 404
    for bad in ("/../etc/passwd", "/synthetic/../../etc/passwd", "/%2e%2e/etc/passwd", "/synthetic/%2F..%2F"):
        assert _get(http_server, bad)[0] in (403, 404), bad
    assert _get(http_server, "/%2e%2e/etc/passwd")[0] == 403
    assert _get(http_server, path, method="PUT")[0] == 501  # read-only
    assert http_server.clients() == {LOCAL}


def test_faults_are_counted_down_and_logged(http_server, synthetic_cogs) -> None:
    path = "/" + synthetic_cogs[1]
    http_server.faults.add("503", count=2, path_contains="label")
    http_server.faults.add("404", count=1, path_contains="label", skip=1)
    statuses = [_get(http_server, path)[0] for _ in range(4)]
    # The 503 rule fires twice; the 404 rule skipped one matching request (the first), then fires.
    assert statuses == [503, 503, 404, 200]
    assert _get(http_server, path)[0] == 200 and http_server.faults.pending() == 0
    assert [r.status for r in http_server.log()] == [503, 503, 404, 200, 200]
    assert [r.fault for r in http_server.log()] == ["503", "503", "404", None, None]
    assert _get(http_server, path)[1].get("retry-after") is None
    http_server.faults.add("503")
    assert _get(http_server, path)[1]["retry-after"] == "0"

    for kind, error in [("drop", http.client.RemoteDisconnected), ("reset", ConnectionResetError),
                        ("truncate", http.client.IncompleteRead)]:  # fmt: skip
        http_server.faults.add(kind)
        with pytest.raises(error):
            _get(http_server, path)
    http_server.faults.fail_always("label", status=403)
    assert {_get(http_server, path)[0] for _ in range(3)} == {403}
    http_server.faults.clear()
    assert _get(http_server, path)[0] == 200
    with pytest.raises(ValueError, match="unknown fault"):
        http_server.faults.add("teapot")


def test_latency_is_applied_to_every_request(http_server, synthetic_cogs) -> None:
    http_server.latency_s = 0.15
    _, took = timed(lambda: [_get(http_server, "/" + synthetic_cogs[1], method="HEAD") for _ in range(2)])
    assert took >= 0.3
    http_server.latency_s = 0.0
    _, took = timed(lambda: _get(http_server, "/" + synthetic_cogs[1], method="HEAD"))
    assert took < 0.15


def test_server_stops_promptly_with_an_idle_keep_alive_connection_open(cog_root, synthetic_cogs) -> None:
    srv = RangeServer(cog_root, timeout_s=30).start()
    port = srv.port
    conn = http.client.HTTPConnection(LOCAL, port, timeout=5)
    conn.request("HEAD", "/" + synthetic_cogs[1])
    conn.getresponse().read()  # the connection stays open (HTTP/1.1 keep-alive), its thread waiting
    _, took = timed(srv.stop)
    conn.close()
    assert took < 2.0
    with pytest.raises(ConnectionRefusedError), socket.create_connection((LOCAL, port), timeout=1):
        pass


# ---------------------------------------------------------------------------------------------------------
# GDAL reads through them


def test_cog_root_holds_cloud_optimized_geotiffs(cog_root, synthetic_cogs) -> None:
    for rel in synthetic_cogs:
        assert cog_layout(cog_root / rel) == "COG"


@pytest.mark.parametrize("seed", [0, 1])
def test_http_read_matches_local_and_uses_range_requests(http_server, cog_root, synthetic_cogs, seed) -> None:
    rel = synthetic_cogs[0]
    expected, window = local_and_window(cog_root, rel, seed)
    got = read_window(http_server.url(rel), window)
    assert np.array_equal(got, expected)
    gets = [r for r in http_server.log() if r.method == "GET"]
    assert gets and all(r.status == 206 and r.range for r in gets)  # ranges only, never the whole file
    assert sum(r.body_bytes for r in gets) < (cog_root / rel).stat().st_size
    assert http_server.clients() == {LOCAL}


def test_https_read_is_verified_and_matches_local(https_server, cog_root, synthetic_cogs) -> None:
    rel = synthetic_cogs[0]
    expected, window = local_and_window(cog_root, rel, seed=2)
    assert https_server.url(rel).startswith(f"https://{LOCAL}:")
    assert np.array_equal(read_window(https_server.url(rel), window), expected)
    assert https_server.count(status=206) >= 1 and https_server.clients() == {LOCAL}
    ctx = ssl.create_default_context(cafile=str(https_server.ca_bundle))  # Python verifies it too
    for host in (LOCAL, "localhost"):  # both names are in the certificate
        url = https_server.url(synthetic_cogs[1]).replace(LOCAL, host)
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            assert resp.status == 200


def test_https_with_an_untrusted_certificate_fails(
    https_server, gdal_options, synthetic_cogs, tmp_path
) -> None:
    other_ca, _ = make_certificate(tmp_path, "other")  # a CA bundle that does not hold the server's
    gdal_options(GDAL_CURL_CA_BUNDLE=str(other_ca), CURL_CA_BUNDLE=str(other_ca))
    with pytest.raises(RasterioIOError, match="SSL certificate problem"):
        read_window(https_server.unique_url(synthetic_cogs[0]), Window(0, 0, 8, 8))
    with (
        pytest.raises(ssl.SSLCertVerificationError),  # Python's default trust store: refused too
        socket.create_connection((LOCAL, https_server.port), timeout=5) as sock,
    ):
        ssl.create_default_context().wrap_socket(sock, server_hostname=LOCAL)
    assert https_server.count(status=206) == 0


def test_s3_read_matches_local_through_moto(s3_server: S3Server, cog_root, synthetic_cogs) -> None:
    rel = synthetic_cogs[0]
    expected, window = local_and_window(cog_root, rel, seed=3)
    assert np.array_equal(read_window(s3_server.url(S3_BUCKET, rel), window), expected)
    reads = s3_server.log(f"/{S3_BUCKET}/{rel}")
    assert reads and all(r.method == "GET" and r.status == 206 and r.range for r in reads)
    assert all(r.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 ") for r in reads)  # SigV4
    assert {r.client for r in s3_server.log()} == {LOCAL}


@pytest.mark.shared_data
def test_sen1floods11_reads_match_local_over_http_and_s3(
    http_server, s3_server, cog_root, sen1floods11_cogs
) -> None:
    for rel in sen1floods11_cogs:
        expected, window = local_and_window(cog_root, rel, seed=4)
        assert np.array_equal(read_window(http_server.url(rel), window), expected)
        assert np.array_equal(read_window(s3_server.url(S3_BUCKET, rel), window), expected)
    assert http_server.count(method="GET", status=200) == 0 and http_server.clients() == {LOCAL}


def test_multirange_single_get_is_served_as_multipart(
    http_server, gdal_options, cog_root, synthetic_cogs
) -> None:
    gdal_options(GDAL_HTTP_MULTIRANGE="SINGLE_GET")
    rel = synthetic_cogs[0]
    window = Window(30, 40, 150, 120)  # tiles apart in the file: one GET with several ranges
    with rasterio.open(cog_root / rel) as ds:
        expected = ds.read(window=window)
    assert np.array_equal(read_window(http_server.url(rel), window), expected)
    assert any("," in (r.range or "") and r.status == 206 for r in http_server.log())


# ---------------------------------------------------------------------------------------------------------
# Faults: GDAL retries, or fails in bounded time, never returns wrong pixels


def test_503_is_retried_when_gdal_http_max_retry_is_set(
    http_server, gdal_options, cog_root, synthetic_cogs
) -> None:
    rel = synthetic_cogs[0]
    expected, window = local_and_window(cog_root, rel, seed=6)
    gdal_options(GDAL_HTTP_MAX_RETRY="3", GDAL_HTTP_RETRY_DELAY="0.01")
    url = http_server.unique_url(rel)
    http_server.faults.add("503", count=2, path_contains=url_path(url))
    assert np.array_equal(read_window(url, window), expected)
    statuses = [r.status for r in http_server.log()]
    assert statuses[:3] == [503, 503, 200]  # the opening HEAD: two 503s, then answered
    assert http_server.faults.pending() == 0


def test_503_without_retries_fails_the_open(http_server, synthetic_cogs) -> None:
    url = http_server.unique_url(synthetic_cogs[0])
    http_server.faults.add("503", count=1, path_contains=url_path(url))
    with pytest.raises(RasterioIOError, match="HTTP response code: 503"):
        read_window(url, Window(0, 0, 8, 8))
    assert http_server.count(status=503) == 1


def test_persistent_errors_give_up_after_max_retry(http_server, gdal_options, synthetic_cogs) -> None:
    gdal_options(GDAL_HTTP_MAX_RETRY="2", GDAL_HTTP_RETRY_DELAY="0.01")
    url = http_server.unique_url(synthetic_cogs[0])
    http_server.faults.fail_always(url_path(url), status=503)
    err, took = timed(lambda: read_window(url, Window(0, 0, 8, 8)))
    assert isinstance(err, RasterioIOError) and "503" in str(err)
    assert http_server.count(status=503) == 3 and took < 5  # one try and two retries, then it gives up
    url = http_server.unique_url(synthetic_cogs[0])
    http_server.faults.fail_always(url_path(url), status=404)
    err, _ = timed(lambda: read_window(url, Window(0, 0, 8, 8)))
    assert isinstance(err, RasterioIOError) and "404" in str(err)
    assert http_server.count(status=404) == 1  # a 404 is not retried


@pytest.mark.parametrize("kind", ["drop", "reset", "truncate"])
def test_a_broken_block_read_is_retried_or_fails_never_wrong(
    http_server, gdal_options, cog_root, synthetic_cogs, kind
) -> None:
    """One broken answer to a block read: GDAL re-reads it (same pixels) or raises, in bounded time."""
    gdal_options(GDAL_HTTP_TIMEOUT="2")
    rel = synthetic_cogs[0]
    expected, window = local_and_window(cog_root, rel, seed=7)
    url = http_server.unique_url(rel)
    http_server.faults.add(kind, count=1, methods=("GET",), skip=1)  # the header read passes, a block breaks
    got, took = timed(lambda: read_window(url, window))
    assert took < 5
    assert [f[0] for f in http_server.faults.fired] == [kind]
    if isinstance(got, BaseException):
        assert isinstance(got, RasterioIOError), error_chain(got)
    else:
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("kind", ["drop", "reset", "truncate", "503"])
def test_every_block_read_broken_is_an_error_not_a_hang(
    http_server, gdal_options, synthetic_cogs, kind
) -> None:
    gdal_options(GDAL_HTTP_TIMEOUT="2", GDAL_HTTP_MAX_RETRY="1", GDAL_HTTP_RETRY_DELAY="0.01")
    url = http_server.unique_url(synthetic_cogs[0])
    http_server.faults.add(kind, count=None, methods=("GET",), skip=1)
    err, took = timed(lambda: read_window(url, Window(0, 0, 200, 200)))
    assert isinstance(err, RasterioIOError), err
    assert "TIFFReadEncodedTile() failed" in error_chain(err) or "Read error" in error_chain(err)
    assert took < 5


def test_a_dropped_connection_on_open_is_an_error(http_server, gdal_options, synthetic_cogs) -> None:
    gdal_options(GDAL_HTTP_MAX_RETRY="3", GDAL_HTTP_RETRY_DELAY="0.01")
    http_server.faults.add("drop", count=None, methods=("HEAD",))
    err, took = timed(lambda: read_window(http_server.unique_url(synthetic_cogs[0]), Window(0, 0, 8, 8)))
    assert isinstance(err, RasterioIOError) and "Empty reply from server" in str(err), err
    assert took < 5


def test_a_reset_on_open_is_retried(http_server, gdal_options, cog_root, synthetic_cogs) -> None:
    gdal_options(GDAL_HTTP_MAX_RETRY="3", GDAL_HTTP_RETRY_DELAY="0.01")
    rel = synthetic_cogs[0]
    expected, window = local_and_window(cog_root, rel, seed=8)
    http_server.faults.add("reset", count=1, methods=("HEAD",))
    assert np.array_equal(read_window(http_server.unique_url(rel), window), expected)
    assert [r.fault for r in http_server.log()][:2] == ["reset", None]


def test_a_stalled_server_times_out(http_server, gdal_options, synthetic_cogs) -> None:
    gdal_options(GDAL_HTTP_TIMEOUT="1")
    http_server.latency_s = 1.5
    err, took = timed(lambda: read_window(http_server.unique_url(synthetic_cogs[0]), Window(0, 0, 8, 8)))
    assert isinstance(err, RasterioIOError) and "timed out" in str(err), err
    assert took < 3


def test_gdal_caches_a_failed_open_until_its_cache_is_cleared(http_server, synthetic_cogs) -> None:
    """Reopening a URL that failed does not ask the server again: GDAL re-raises the cached failure
    (so a retry around ``rasterio.open`` needs a cleared cache, or another URL, to reach the network)."""
    url = http_server.url(synthetic_cogs[1])
    http_server.faults.add("404", count=1, path_contains=url_path(url))
    for _ in range(2):
        with pytest.raises(RasterioIOError, match="HTTP response code: 404"):
            read_window(url, Window(0, 0, 4, 4))
    assert len(http_server.log()) == 1  # the second open sent nothing
    if not clear_vsicurl_cache():
        pytest.skip("VSICurlClearCache is not reachable in this process")
    assert read_window(url, Window(0, 0, 4, 4)).shape == (1, 4, 4)
    assert http_server.count(status=404) == 1 and http_server.count(method="GET", status=206) >= 1
