"""Nearest resampling of a coarser file whose pixels nest in the reference grid's (Sentinel-2's 20 m SCL or
bands onto 10 m) is done by indexing one read: the same pixels and footprint as a nearest ``reproject``."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.transform import from_origin
from rasterio.windows import Window

import geoseg.data.stack_reader as stack_reader
from conftest import write_tif
from geoseg.data.stack import Grid, inspect_stack

REF = Grid("", tuple(from_origin(500_000, 5_000_000, 10, 10))[:6], 96, 96)


def reader_for(path, nodata=None):
    from geoseg.data.band_files import FileEntry

    stack = inspect_stack([str(path)], [FileEntry("m", None, nodata, "nearest")], None, "first")
    ref = Grid(stack.grid.crs, REF.transform, REF.height, REF.width)
    files = tuple(type(f)(**{**f.__dict__, "on_grid": False}) for f in stack.files)
    return stack_reader.StackReader(files, (1, 2), ref, "any", "test")


@pytest.mark.parametrize(("factor", "shift"), [(2, (0, 0)), (3, (1, 2)), (2, (-3, 5))])
@pytest.mark.parametrize("window", [Window(0, 0, 32, 32), Window(17, 41, 30, 23), Window(70, 80, 26, 16)])
def test_indexing_gives_what_a_nearest_reproject_gives(tmp_path, monkeypatch, factor, shift, window):
    rng = np.random.default_rng(factor)
    size = 96 // factor - 3  # a footprint smaller than the reference grid: some windows reach past it
    data = rng.integers(1, 250, size=(2, size, size)).astype(np.uint8)
    data[:, 2, 3] = 0  # a nodata pixel
    west, north = 500_000 + 10 * shift[1], 5_000_000 - 10 * shift[0]
    path = write_tif(
        tmp_path / "coarse.tif", data, from_origin(west, north, 10 * factor, 10 * factor), nodata=0
    )
    reader = reader_for(path)
    assert stack_reader._integer_lattice(reader._src(0), reader.grid) is not None
    fast = np.empty((2, window.height, window.width), np.uint8)
    fast_invalid = reader.read(window, fast)
    monkeypatch.setattr(stack_reader, "_integer_lattice", lambda *_: None)  # the reproject path
    slow = np.empty_like(fast)
    slow_invalid = reader_for(path).read(window, slow)
    assert (fast_invalid is None) == (slow_invalid is None)
    if slow_invalid is not None:
        np.testing.assert_array_equal(fast_invalid, slow_invalid)
        np.testing.assert_array_equal(fast[:, ~slow_invalid], slow[:, ~slow_invalid])
    else:
        np.testing.assert_array_equal(fast, slow)


def test_a_grid_that_does_not_nest_is_left_to_reproject(tmp_path):
    data = np.ones((2, 30, 30), np.uint8)
    path = write_tif(tmp_path / "odd.tif", data, from_origin(500_005, 5_000_000, 20, 20))  # half a pixel off
    reader = reader_for(path)
    assert stack_reader._integer_lattice(reader._src(0), reader.grid) is None
