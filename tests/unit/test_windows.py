"""Window arithmetic: grids cover every pixel and stay inside; candidate filtering is exact on its lattice."""

import numpy as np
import pytest

from geoseg.data.windows import grid_offsets, grid_windows, random_candidates, window_valid_fraction


@pytest.mark.parametrize(
    ("h", "w", "size", "stride"), [(40, 48, 16, 16), (37, 53, 16, 10), (16, 16, 16, 16), (100, 17, 8, 3)]
)
def test_grid_windows_cover_every_pixel_and_stay_inside(h, w, size, stride):
    cover = np.zeros((h, w), dtype=int)
    for r, c in grid_windows(h, w, size, stride):
        assert r >= 0 and r + size <= h and c >= 0 and c + size <= w
        cover[r : r + size, c : c + size] += 1
    assert cover.min() >= 1


def test_grid_offsets_clamp_the_last_window():
    assert grid_offsets(40, 16, 16) == [0, 16, 24]
    assert grid_offsets(32, 16, 16) == [0, 16]
    with pytest.raises(ValueError, match="larger"):
        grid_offsets(10, 16, 16)


def test_window_valid_fraction_matches_brute_force():
    rng = np.random.default_rng(1)
    coarse = rng.random((12, 10))
    frac = window_valid_fraction(coarse, size=16, step=4)  # windows of 4x4 cells
    assert frac.shape == (9, 7)
    for i in range(9):
        for j in range(7):
            assert frac[i, j] == pytest.approx(coarse[i : i + 4, j : j + 4].mean())


def test_random_candidates_respect_the_nodata_filter():
    coarse = np.ones((16, 16))
    coarse[:, :8] = 0.0  # left half nodata
    origins, frac = random_candidates(coarse, 128, 128, size=64, max_nodata_fraction=0.25)
    assert len(origins) > 0
    step = 8
    for (r, c), f in zip(origins, frac, strict=True):
        assert r + 64 <= 128 and c + 64 <= 128
        window = coarse[r // step : r // step + 8, c // step : c // step + 8]
        assert f == pytest.approx(window.mean()) and 1 - f <= 0.25
    assert origins[:, 1].min() >= 48  # at most 2 of the 8 cell columns may be nodata
