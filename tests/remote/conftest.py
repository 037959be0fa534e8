"""Fixtures for remote reads: COGs, and real HTTP, HTTPS and S3 servers on 127.0.0.1 serving them.

Servers are started once per session; every test gets them back reset (no faults, no latency, an empty
request log), with GDAL's /vsicurl/ cache cleared and the GDAL options and environment it set put back.

- ``cog_root``: the folder of COGs every server serves (``synthetic/`` always; ``sen1floods11/`` when
  ../shared/data is there). ``synthetic_cogs`` / ``sen1floods11_cogs``: (image, label) paths relative to it.
- ``http_server`` / ``https_server``: a :class:`servers.range_http.RangeServer` (``srv.url(rel)``,
  ``srv.unique_url(rel)``, ``srv.faults``, ``srv.latency_s``, ``srv.log()``); for ``https_server`` GDAL
  trusts its certificate (``GDAL_CURL_CA_BUNDLE``) for the test.
- ``s3_server``: a :class:`servers.s3.S3Server` whose bucket ``geoseg-test`` holds ``cog_root``, with GDAL
  and the environment pointed at it for the test (``s3_server.url(S3_BUCKET, rel)``).
- ``gdal_options``: ``gdal_options(GDAL_HTTP_MAX_RETRY="3")`` sets GDAL options until the test ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rasterio._env import get_gdal_config

from servers.cog import write_cogs, write_synthetic_pair
from servers.gdal import clear_vsicurl_cache, gdal_config
from servers.range_http import RangeServer
from servers.s3 import AWS_UNSET, BUCKET, S3Server

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEN1FLOODS11 = SHARED_DATA / "sen1floods11"
S3_BUCKET = BUCKET

# What every remote test starts from, whatever the environment says: no retries unless a test asks, short
# timeouts (a fault fails in seconds, never hangs), no directory listing or sidecar probing on open.
BASE_GDAL_OPTIONS: dict[str, str | None] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "0",
    "GDAL_HTTP_RETRY_DELAY": "0.01",
    "GDAL_HTTP_TIMEOUT": "5",
    "GDAL_HTTP_CONNECTTIMEOUT": "3",
    "GDAL_HTTP_MULTIRANGE": None,
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": None,
    "GDAL_HTTP_PROXY": None,
    "GDAL_HTTPS_PROXY": None,
    "GDAL_HTTP_UNSAFESSL": None,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": None,
}


@pytest.fixture(scope="session")
def cog_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COGs for the servers: ``synthetic/{image,label}.tif`` (3-band uint16 and uint8, 300x260, 64-px
    tiles) always, ``sen1floods11/*_{S2Hand,LabelHand}.tif`` (256-px tiles) when ../shared/data has them."""
    root = tmp_path_factory.mktemp("cogs")
    write_synthetic_pair(root)
    if SEN1FLOODS11.is_dir():
        sources = sorted(SEN1FLOODS11.glob("*_S2Hand.tif")) + sorted(SEN1FLOODS11.glob("*_LabelHand.tif"))
        write_cogs(sources, root)
    return root


@pytest.fixture(scope="session")
def synthetic_cogs(cog_root: Path) -> tuple[str, str]:
    """The synthetic (image, label) COGs, as paths relative to ``cog_root`` (and so URL paths)."""
    return "synthetic/image.tif", "synthetic/label.tif"


@pytest.fixture(scope="session")
def sen1floods11_cogs(cog_root: Path) -> tuple[str, str]:
    """A sen1floods11 (S2Hand image, LabelHand label) pair as COGs, relative to ``cog_root``; skips the
    test when ../shared/data does not hold sen1floods11."""
    images = sorted((cog_root / "sen1floods11").glob("*_S2Hand.tif"))
    if not images:
        pytest.skip(f"needs ../shared/data: no sen1floods11 S2Hand scenes in {SEN1FLOODS11}")
    image = images[0]
    label = image.with_name(image.name.replace("_S2Hand", "_LabelHand"))
    return image.relative_to(cog_root).as_posix(), label.relative_to(cog_root).as_posix()


@pytest.fixture
def gdal_options() -> Iterator[Callable[..., None]]:
    """``gdal_options(NAME="value", OTHER=None)``: GDAL options set (None: unset) until the test ends."""
    with contextlib.ExitStack() as stack:

        def apply(**options: str | None) -> None:
            """Set these GDAL options for the rest of the test."""
            stack.enter_context(gdal_config(options))

        yield apply


@pytest.fixture(autouse=True)
def _remote_isolation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every remote test: GDAL's network cache cleared before and after, :data:`BASE_GDAL_OPTIONS` set and
    put back, and no proxy between the tests and 127.0.0.1."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    clear_vsicurl_cache()
    with gdal_config(BASE_GDAL_OPTIONS):
        yield
    clear_vsicurl_cache()


@pytest.fixture(scope="session")
def _http_session(cog_root: Path) -> Iterator[RangeServer]:
    """The plain-HTTP range server over ``cog_root``, for the whole session."""
    with RangeServer(cog_root) as srv:
        yield srv


@pytest.fixture(scope="session")
def _https_session(cog_root: Path) -> Iterator[RangeServer]:
    """The HTTPS range server over ``cog_root`` (its own self-signed certificate), for the whole session."""
    pytest.importorskip("cryptography", reason="makes the test certificate: pip install cryptography")
    with RangeServer(cog_root, tls=True) as srv:
        yield srv


@pytest.fixture(scope="session")
def _s3_session(cog_root: Path) -> Iterator[S3Server]:
    """The moto S3 server, bucket :data:`S3_BUCKET` holding ``cog_root``, for the whole session."""
    pytest.importorskip("moto.server", reason='needs moto\'s server mode: pip install "moto[server]>=5"')
    with S3Server() as s3:
        s3.create_bucket(S3_BUCKET)
        s3.upload_folder(cog_root, S3_BUCKET)
        yield s3


@pytest.fixture
def http_server(_http_session: RangeServer) -> Iterator[RangeServer]:
    """The HTTP range server, reset for this test (and again after it)."""
    _http_session.reset()
    yield _http_session
    _http_session.reset()


@pytest.fixture
def https_server(_https_session: RangeServer, gdal_options: Callable[..., None]) -> Iterator[RangeServer]:
    """The HTTPS range server, reset, with GDAL trusting its certificate for this test.

    ``GDAL_CURL_CA_BUNDLE`` it must be: rasterio sets it (to certifi's bundle) when it loads GDAL, and
    GDAL reads it before ``CURL_CA_BUNDLE``, so ``CURL_CA_BUNDLE`` alone is never used.
    """
    assert _https_session.ca_bundle is not None
    gdal_options(
        GDAL_CURL_CA_BUNDLE=str(_https_session.ca_bundle), CURL_CA_BUNDLE=str(_https_session.ca_bundle)
    )
    assert get_gdal_config("GDAL_HTTP_UNSAFESSL") in (None, False)  # verification stays on
    _https_session.reset()
    yield _https_session
    _https_session.reset()


@pytest.fixture
def s3_server(
    _s3_session: S3Server, monkeypatch: pytest.MonkeyPatch, gdal_options: Callable[..., None]
) -> Iterator[S3Server]:
    """The S3 server with GDAL (config options and environment) and boto3 pointed at it for this test.

    The environment carries the settings too: rasterio, opening an ``s3://`` path, builds a boto3 session
    from it, and removes the ``AWS_*`` GDAL options that session set when it is done with the file.
    """
    for name in AWS_UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in _s3_session.aws_environ().items():
        monkeypatch.setenv(name, value)
    gdal_options(**_s3_session.gdal_env())
    _s3_session.reset_log()
    yield _s3_session
    _s3_session.reset_log()
