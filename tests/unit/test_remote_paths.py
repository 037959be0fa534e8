"""Remote paths without a network: what is a URL, how it is joined, named and shown (never with its
secret), how a failure is worded, and that retries are bounded."""

from __future__ import annotations

import time

import pytest
from rasterio.errors import RasterioIOError

from geoseg.data.band_files import FileEntry
from geoseg.data.remote import (
    REMOTE_GDAL_OPTIONS,
    is_remote,
    join,
    remote_cause,
    remote_gdal_options,
    shown,
    stem,
    with_retries,
)
from geoseg.data.scene_paths import expand_pattern, label_path, manifest_images, scene_name
from geoseg.errors import GeosegError


@pytest.mark.parametrize(
    "path",
    ["https://host/a.tif", "HTTP://host/a.tif", "s3://bucket/key.tif", "gs://b/k.tif", "az://c/k.tif",
     "/vsicurl/https://host/a.tif", "/vsis3/bucket/key.tif"],
)  # fmt: skip
def test_urls_and_gdal_virtual_paths_are_remote(path):
    assert is_remote(path)


@pytest.mark.parametrize("path", ["/data/a.tif", "a.tif", "C:/data/a.tif", "file:///data/a.tif", None])
def test_local_paths_are_not_remote(path):
    assert not is_remote(path)


def test_a_url_is_shown_without_its_token_or_user_info():
    url = "https://user:pw@host.example:8443/scenes/a.tif?X-Amz-Signature=s3cr3t&sig=s3cr3t2"
    text = shown(url)
    assert "s3cr3t" not in text and "pw" not in text and "user" not in text
    assert text == "https://host.example:8443/scenes/a.tif?…"
    assert shown("s3://bucket/key.tif") == "s3://bucket/key.tif"


def test_join_keeps_absolute_and_remote_paths_and_joins_under_a_url_prefix():
    assert join("https://host/root", "labels/x.tif") == "https://host/root/labels/x.tif"
    assert join("/data", "s3://b/k.tif") == "s3://b/k.tif"
    assert join("https://host/root", "/abs/label.tif") == "/abs/label.tif"
    assert join("/data", "x.tif") == "/data/x.tif"


def test_names_of_a_url_leave_out_its_query():
    assert stem("https://host/a/S2_B04.tif?token=1") == "S2_B04"
    assert scene_name("https://host/a/S2_B04.tif", "B04") == "S2"


def test_label_templates_of_a_url_scene_keep_the_url():
    images = ("https://h:8/a/b/S2_B04.tif",)
    assert (
        label_path(images, "labels/{scene}.tif", "https://h:8/root", "B04")
        == "https://h:8/root/labels/S2.tif"
    )
    assert (
        label_path(images, "{parent}/{stem}_label.tif", "/root", "B04") == "https://h:8/a/b/S2_B04_label.tif"
    )


def test_a_url_pattern_fills_its_file_placeholder_without_listing():
    files = [FileEntry("B02"), FileEntry("B03")]
    assert expand_pattern("s3://bkt/x/S2_{file}.tif", files, "opt") == [
        ("s3://bkt/x/S2_B02.tif", "s3://bkt/x/S2_B03.tif")
    ]
    assert expand_pattern("https://h/x.tif", None, "opt") == [("https://h/x.tif",)]


def test_a_wildcard_in_a_url_is_one_line_pointing_at_a_manifest_or_stac():
    with pytest.raises(GeosegError, match=r"URL with a wildcard.*data\.manifest.*data\.stac") as err:
        expand_pattern("https://host/scenes/*.tif?sig=s3cr3t", None, "data.splits.train.images")
    assert "s3cr3t" not in str(err.value) and "\n" not in str(err.value)


def test_manifest_cells_may_be_urls():
    assert manifest_images("https://h/a.tif; s3://b/c.tif", "/base", None, "m") == (
        "https://h/a.tif", "s3://b/c.tif")  # fmt: skip


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("HTTP response code: 404", "HTTP 404, not found"),
        ("HTTP response code: 403 - https://h/a.tif?sig=s3cr3t", "HTTP 403, access denied"),
        ("CURL error: Failed to connect to 127.0.0.1 port 9: Connection refused", "refused the connection"),
        ("CURL error: Could not resolve host: nowhere.example", "does not resolve"),
        ("CURL error: Operation timed out after 1002 milliseconds", "did not answer in time"),
        ("AWS_SECRET_ACCESS_KEY and AWS_NO_SIGN_REQUEST configuration options not defined", "credentials"),
        ("'/vsicurl/https://h/a.tif?sig=s3cr3t' not recognized as being in a supported file format",
         "does not recognise its format"),
    ],
)  # fmt: skip
def test_gdal_errors_become_a_short_cause_without_the_url(message, expected):
    cause = remote_cause(message)
    assert expected in cause and "s3cr3t" not in cause


def test_retries_are_bounded_reset_between_tries_and_end_in_one_line_without_the_secret():
    calls, resets = [], []

    def read() -> None:
        calls.append(time.perf_counter())
        raise RasterioIOError("Read failed. TIFFFillTile: got 0 bytes")

    with pytest.raises(GeosegError) as err:
        with_retries(read, lambda: resets.append(1), "https://h/a.tif?sig=s3cr3t", "window 1", (0.01, 0.02))
    assert len(calls) == 3 and len(resets) == 2
    text = str(err.value)
    assert (
        "after 3 tries" in text and "https://h/a.tif?…" in text and "s3cr3t" not in text and "\n" not in text
    )


def test_a_read_that_recovers_returns_its_value():
    attempts = iter([RasterioIOError("cut"), 7])

    def read() -> int:
        value = next(attempts)
        if isinstance(value, Exception):
            raise value
        return value

    assert with_retries(read, lambda: None, "s3://b/k.tif", "window", (0.0,)) == 7


def test_remote_options_leave_the_environment_alone(monkeypatch):
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    options = remote_gdal_options()
    assert "GDAL_HTTP_MAX_RETRY" not in options
    assert options["GDAL_DISABLE_READDIR_ON_OPEN"] == REMOTE_GDAL_OPTIONS["GDAL_DISABLE_READDIR_ON_OPEN"]


def test_run_log_lines_show_urls_without_their_token():
    """The run's log format (terminal and train.log) hides a signed URL's token in any geoseg message."""
    import logging

    from geoseg.log_format import ShortFormatter

    url = "https://h/a.tif?sig=s3cr3t"
    record = logging.LogRecord("geoseg.data.build", logging.WARNING, __file__, 1, "scene '%s' is all nodata",
                               (url,), None)  # fmt: skip
    line = ShortFormatter().format(record)
    assert "WARNING: scene 'https://h/a.tif?…' is all nodata" in line and "s3cr3t" not in line
