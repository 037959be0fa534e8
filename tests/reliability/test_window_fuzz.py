"""Fuzz pass (hypothesis) over the window, tile and grid arithmetic and the option checks.

Random scene sizes, tiles, overlaps, panels, chip sizes, strides, regions, block sizes and nodata
layouts, each checked against an independent reference or invariant:

- inference tiles never leave the scene, cover it, and the streamed blend (the real
  :func:`~geoseg.inference.sliding.predict_blocks` accumulator) normalises to exactly one tile's
  worth of weight at every pixel, equal to a naive whole-scene blend without panels;
- training grid and random-chip windows stay inside the scene or region, on their lattices;
- :func:`~geoseg.data.stack_reader.invalid_pixels` matches its per-pixel definition (both rules,
  per-band nodata);
- the data, trainer, tiling and GroupNorm checks either accept a value or raise a one-line
  :class:`~geoseg.errors.GeosegError` that names the option, never another exception type.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from omegaconf import OmegaConf
from torch import nn

from geoseg.data import build
from geoseg.data.build import chip_alignment, random_sampler
from geoseg.data.data_options import check_data_config, class_map_from
from geoseg.data.samplers import GridChipSampler
from geoseg.data.scenes import Scene
from geoseg.data.stack_reader import invalid_pixels
from geoseg.data.windows import (
    block_alignment,
    candidate_step,
    grid_offsets,
    grid_windows,
    random_candidates,
)
from geoseg.engine.state import TrainerOptions
from geoseg.errors import GeosegError
from geoseg.inference.sliding import predict_blocks
from geoseg.inference.tile_source import TileJob, tile_jobs
from geoseg.inference.tiling import TilePlan, blend_window, check_tiling, plan_tiles, positions, ramp
from geoseg.models.norms import GROUP_POLICIES, GroupNorm, group_count

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def fuzz(examples: int) -> Callable:
    """Hypothesis settings of this file: no deadline (CI jitter), no example database on disk."""
    return settings(max_examples=examples, deadline=None, database=None)


def cover_1d(length: int, starts: list[int] | np.ndarray, size: int) -> np.ndarray:
    """How many windows of ``size`` px starting at ``starts`` cover each pixel of ``[0, length)``."""
    diff = np.zeros(length + 1, dtype=np.int64)
    for s in starts:
        diff[max(s, 0)] += 1
        diff[min(s + size, length)] -= 1
    return np.cumsum(diff)[:length]


# What a user can type for an option: Hydra overrides give ints, floats, strings, bools, null, lists, dicts.
JUNK = st.one_of(
    st.integers(-5, 600),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 32.0, -1.0, 1e300]),
    st.text(alphabet="abz019 .-_", max_size=5),
    st.sampled_from(["auto", "64", "true", "null", ""]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-3, 300), max_size=3),
    st.dictionaries(st.sampled_from(["code", "name", "x"]), st.integers(-3, 300), max_size=2),
)


def assert_names(err: GeosegError, *options: str) -> None:
    """The error is one line and names one of ``options``."""
    text = str(err)
    assert "\n" not in text.strip(), f"multi-line error: {text!r}"
    assert any(o in text for o in options), f"{text!r} names none of {options}"


# ---------------------------------------------------------------------------------------------------
# Inference tiling


@st.composite
def tilings(draw: st.DrawFn, max_side: int, max_tile: int, min_tile: int = 1) -> dict[str, int]:
    """A valid (per :func:`check_tiling`) tiling of a random scene."""
    divisor = draw(st.sampled_from([1, 8, 16, 32]))
    tile = divisor * draw(st.integers(-(-min_tile // divisor), max(1, max_tile // divisor)))
    block = draw(st.sampled_from([8, 16, 32, 64, 256]))
    least = -(-tile // block)
    return {
        "height": draw(st.integers(1, max_side)),
        "width": draw(st.integers(1, max_side)),
        "tile": tile,
        "overlap": draw(st.integers(0, tile // 2)),
        "divisor": divisor,
        "block": block,
        "panel": block * draw(st.integers(least, least + 6)),
    }


@given(t=tilings(max_side=3000, max_tile=1024))
@fuzz(300)
def test_tiles_stay_inside_cover_the_scene_and_panels_do_not_change_the_tiles(t: dict[str, int]) -> None:
    """Every tile's data window lies inside the scene (a scene smaller than a tile: one tile at 0 whose
    data window is the whole scene), tiles cover every pixel with a positive weight,
    neighbours share at least ``overlap`` px, and each panel uses exactly the tiles of the no-panel plan
    that touch it, within a span that does not grow with the scene."""
    h, w, tile, overlap, panel = t["height"], t["width"], t["tile"], t["overlap"], t["panel"]
    check_tiling(tile, overlap, t["divisor"], panel, t["block"])
    plan = plan_tiles(h, w, tile, overlap, panel)
    th, tw = plan.tile_shape()
    assert (th, tw) == (min(tile, h), min(tile, w))
    whole = plan_tiles(h, w, tile, overlap, max(w, tile))  # one panel: the reference tile set
    (only,) = whole.panels
    cols = list(only.tile_cols)
    assert whole.rows == plan.rows
    for starts, length, size in ((list(plan.rows), h, th), (cols, w, tw)):
        assert starts[0] == 0 and starts[-1] + size == length, "the last tile must end at the edge"
        assert all(s >= 0 and s + size <= length for s in starts), "a tile leaves the scene"
        gaps = np.diff(starts)
        assert np.all(gaps >= 1) and np.all(gaps <= tile - overlap), "tiles repeat or leave a seam"
        assert cover_1d(length, starts, size).min() >= 1, "a pixel is covered by no tile"
        weight = np.zeros(length)
        for s in starts:  # the blend window is separable: its 1-D sums are the 2-D sums' factors
            weight[s : s + size] += ramp(tile, overlap)[:size]
        assert weight.min() > 0, "a pixel gets no blending weight"
    assert plan.panels[0].col0 == 0 and plan.panels[-1].col1 == w
    for a, b in zip(plan.panels, plan.panels[1:], strict=False):
        assert a.col1 == b.col0
    for p in plan.panels:
        assert 0 < p.col1 - p.col0 <= panel
        assert p.tile_cols == tuple(c for c in cols if c < p.col1 and c + tw > p.col0)
        assert p.tile_cols[-1] + tw - p.tile_cols[0] <= (p.col1 - p.col0) + 2 * tile - 2


@given(
    tile=st.integers(1, 512),
    overlap_frac=st.floats(0, 0.5),
    steps=st.integers(1, 6),
)
@fuzz(200)
def test_raised_cosine_ramps_cross_fade_to_exactly_one(tile: int, overlap_frac: float, steps: int) -> None:
    """The ramp is in (0, 1], symmetric and flat in the middle; on a regular grid (no clamped last tile)
    the raw weights of neighbouring tiles add up to 1 away from the scene edges (sin² + cos² = 1)."""
    overlap = int(overlap_frac * tile)
    r = ramp(tile, overlap)
    assert r.shape == (tile,) and np.all(r > 0) and np.all(r <= 1)
    np.testing.assert_allclose(r, r[::-1], atol=1e-12)
    assert np.all(r[overlap : tile - overlap] == 1.0)
    w2 = blend_window(tile, overlap)
    assert w2.dtype == np.float32 and w2.min() > 0
    np.testing.assert_allclose(w2, np.outer(r, r), rtol=1e-6)
    stride = tile - overlap
    length = tile + steps * stride
    starts = positions(length, tile, stride)
    assert starts == list(range(0, length - tile + 1, stride))
    total = np.zeros(length)
    for s in starts:
        total[s : s + tile] += r
    np.testing.assert_allclose(total[overlap : length - overlap], 1.0, atol=1e-12)


COLOURS = 9  # tile (i, j) gets colour 3 * (i % 3) + j % 3: tiles that share a pixel never share a colour


@dataclass
class ColourTiles:
    """A stand-in for TileSource: every tile's single band holds its colour, no pixel is invalid."""

    plan: TilePlan
    cols: list[int]
    batch_size: int

    def colour(self, job: TileJob) -> np.ndarray:
        colour = 3 * (self.plan.rows.index(job.row) % 3) + self.cols.index(job.col) % 3
        return np.full((1, self.plan.tile, self.plan.tile), colour, dtype=np.float32)

    def __iter__(self):
        jobs = tile_jobs(self.plan)
        for start in range(0, len(jobs), self.batch_size):
            part = jobs[start : start + self.batch_size]
            yield part, torch.from_numpy(np.stack([self.colour(j) for j in part])), [None] * len(part)


class ColourModel(nn.Module):
    """Logits whose softmax is exactly one-hot on the input's colour (0 and -inf logits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hot = nn.functional.one_hot(x[:, 0].long(), COLOURS).permute(0, 3, 1, 2).bool()
        return torch.where(hot, 0.0, -torch.inf)


@given(t=tilings(max_side=120, max_tile=96, min_tile=16), batch=st.integers(1, 8))  # <= 225 tiles
@fuzz(120)
def test_streamed_blend_gives_every_pixel_exactly_one_tile_after_normalisation(
    t: dict[str, int], batch: int
) -> None:
    """Through the real panel accumulator, a model whose output is one-hot on the tile's colour yields
    at each pixel each covering tile's normalised weight: the weights sum to 1, each tile's weight is
    positive on its footprint and 0 elsewhere, every pixel is handed out once, and the result equals a
    naive float64 whole-scene blend without panels."""
    h, w, tile, overlap, block = t["height"], t["width"], t["tile"], t["overlap"], t["block"]
    assert not t["panel"] % block
    plan = plan_tiles(h, w, tile, overlap, t["panel"])
    cols = sorted({c for p in plan.panels for c in p.tile_cols})
    th, tw = plan.tile_shape()

    out = np.zeros((COLOURS, h, w), dtype=np.float64)
    handed = np.zeros((h, w), dtype=np.int64)
    tiles = ColourTiles(plan, cols, batch)
    blocks = predict_blocks(tiles, plan, ColourModel(), torch.device("cpu"), COLOURS, block=block,
                            keep_probs="float32")  # fmt: skip
    for pending in blocks:
        done = pending.finish()
        window, probs, invalid = done.window, done.probs, done.invalid
        rows, cs = window.toslices()
        assert probs.shape == (COLOURS, rows.stop - rows.start, cs.stop - cs.start)
        assert not invalid.any()
        handed[rows, cs] += 1
        out[:, rows, cs] = probs
    assert np.all(handed == 1), "a pixel was handed out twice or never"

    ref = np.zeros((COLOURS, h, w))
    win = np.outer(ramp(tile, overlap), ramp(tile, overlap))[:th, :tw]
    for i, r in enumerate(plan.rows):
        for j, c in enumerate(cols):
            ref[3 * (i % 3) + j % 3, r : r + th, c : c + tw] += win
    ref /= ref.sum(axis=0)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.all(out[ref > 0] > 0) and np.all(out[ref == 0] == 0), "a tile's weight outside its footprint"


TILING_OPTION = st.one_of(JUNK, st.integers(-64, 2048), st.sampled_from([0, 16, 32, 64, 256, 512, 2048]))


@given(
    tile=TILING_OPTION,
    overlap=TILING_OPTION,
    panel=TILING_OPTION,
    divisor=st.sampled_from([1, 8, 16, 32]),
    block=st.sampled_from([16, 256]),
)
@fuzz(400)
def test_tiling_options_are_accepted_or_refused_in_one_line(
    tile: Any, overlap: Any, panel: Any, divisor: int, block: int
) -> None:
    """check_tiling raises only GeosegError naming tile/overlap/panel; what it accepts plans a scene."""
    try:
        check_tiling(tile, overlap, divisor, panel, block)
    except GeosegError as err:
        assert_names(err, "tile=", "overlap=", "panel=")
        return
    for v in (tile, overlap, panel):
        assert isinstance(v, int) and not isinstance(v, bool), f"accepted a non-integer option {v!r}"
    assert tile >= divisor and tile % divisor == 0 and 0 <= overlap <= tile // 2
    assert panel >= tile and panel % block == 0
    for h, w in ((1, 1), (37, 1000)):
        plan = plan_tiles(h, w, tile, overlap, panel)
        assert plan.num_tiles >= 1


# ---------------------------------------------------------------------------------------------------
# Training chip windows


@given(
    length=st.integers(1, 3000),
    size_frac=st.floats(0, 1),
    stride_frac=st.floats(0, 2),
    other=st.integers(1, 200),
)
@fuzz(300)
def test_grid_windows_stay_inside_and_cover_when_the_stride_allows(
    length: int, size_frac: float, stride_frac: float, other: int
) -> None:
    """Grid offsets start at 0, end at the edge, step by ``stride`` except the clamped last one, never
    leave the extent, cover every pixel when ``stride <= size``; 2-D windows are their product."""
    size = max(1, round(size_frac * length))
    stride = max(1, round(stride_frac * size))
    offs = grid_offsets(length, size, stride)
    assert offs[0] == 0 and offs[-1] == length - size
    assert all(0 <= o <= length - size for o in offs)
    assert offs[:-1] == list(range(0, length - size, stride))[: len(offs) - 1]
    assert np.all(np.diff(offs) >= 1) and np.all(np.diff(offs) <= stride)
    assert len(offs) == math.ceil((length - size) / stride) + 1
    if stride <= size:
        assert cover_1d(length, offs, size).min() >= 1
    size2 = min(size, other)
    wins = grid_windows(length, other, size2, stride)
    assert wins == [
        (r, c) for r in grid_offsets(length, size2, stride) for c in grid_offsets(other, size2, stride)
    ]


@st.composite
def regions(draw: st.DrawFn, size: int) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of a region at least ``size`` px on each side."""
    r0, c0 = draw(st.integers(0, 300)), draw(st.integers(0, 300))
    return r0, c0, r0 + draw(st.integers(size, size + 120)), c0 + draw(st.integers(size, size + 120))


@given(
    data=st.data(),
    size=st.integers(1, 64),
    stride=st.one_of(st.none(), st.integers(1, 96)),
    world=st.integers(1, 4),
    max_chips=st.one_of(st.none(), st.integers(1, 50)),
)
@fuzz(150)
def test_grid_sampler_chips_stay_inside_their_regions_and_shards_partition_them(
    data: st.DataObject, size: int, stride: int | None, world: int, max_chips: int | None
) -> None:
    """Every grid chip lies inside its scene's region, the ranks' shards partition the (thinned) grid,
    and ``max_chips`` keeps at most that many chips of the full grid."""
    bounds = data.draw(st.lists(regions(size), min_size=1, max_size=3))
    full = GridChipSampler(bounds, size, stride).chips
    assert len(full) == sum(len(grid_windows(r1 - r0, c1 - c0, size, stride)) for r0, c0, r1, c1 in bounds)
    thinned = GridChipSampler(bounds, size, stride, max_chips=max_chips).chips
    assert set(thinned) <= set(full) and len(set(thinned)) == len(thinned)
    assert len(thinned) == (len(full) if max_chips is None else min(max_chips, len(full)))
    shards = [list(GridChipSampler(bounds, size, stride, r, world, max_chips)) for r in range(world)]
    assert sorted(c for s in shards for c in s) == sorted(thinned)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    for chip in thinned:
        r0, c0, r1, c1 = bounds[chip.scene]
        assert r0 <= chip.row and chip.row + size <= r1 and c0 <= chip.col and chip.col + size <= c1


@given(size=st.integers(1, 1024), block=st.integers(0, 1024), extent=st.integers(1, 8192))
@fuzz(400)
def test_block_alignment_puts_chips_on_the_fewest_blocks_and_candidates_on_its_lattice(
    size: int, block: int, extent: int
) -> None:
    """An aligned chip touches the fewest blocks any chip of its size can (ceil(size/block)); the
    candidate step divides the alignment and ``max(1, size // 8)``, so aligned origins are candidates."""
    a = block_alignment(size, block, extent)
    assert a in (1, size, block)
    assert (a == 1) == (block >= extent or block <= 1 or size == 1)
    if a > 1:
        least = -(-size // block)
        for origin in range(0, 64 * a, a):
            assert (origin + size - 1) // block - origin // block + 1 == least
    other = block_alignment(size, max(block // 2, 1), extent)
    step = candidate_step(size, (a, other))
    assert step >= 1 and max(1, size // 8) % step == 0
    assert all(x % step == 0 for x in (a, other) if x > 1)


def nodata_cells(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A coarse valid-fraction mask: random cells of 0, 0.25, 0.5 or 1, often with a nodata rectangle."""
    rng = np.random.default_rng(seed)
    levels = [np.array([0.0, 1.0]), np.array([0.0, 0.25, 0.5, 1.0]), np.array([1.0])][rng.integers(3)]
    coarse = rng.choice(levels, size=shape, p=rng.dirichlet(np.ones(len(levels))))
    if rng.random() < 0.5:  # a scene edge or swath gap: a rectangle of nodata
        r0, c0 = rng.integers(shape[0] + 1), rng.integers(shape[1] + 1)
        coarse[r0 : r0 + rng.integers(shape[0] + 1), c0 : c0 + rng.integers(shape[1] + 1)] = 0.0
    return coarse


@st.composite
def candidate_cases(draw: st.DrawFn) -> dict[str, Any]:
    """A scene, chip size, alignment-derived step and a coarse valid mask on cells of that step."""
    size = draw(st.integers(1, 96))
    height, width = draw(st.integers(1, 200)), draw(st.integers(1, 200))
    blocks = draw(st.tuples(st.integers(1, 256), st.integers(1, 256)))
    align = (block_alignment(size, blocks[0], height), block_alignment(size, blocks[1], width))
    step = candidate_step(size, align)
    shape = (math.ceil(height / step), math.ceil(width / step))
    coarse = nodata_cells(shape, draw(st.integers(0, 2**32 - 1)))
    return {"size": size, "height": height, "width": width, "step": step, "coarse": coarse,
            "max_nodata": draw(st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0]))}  # fmt: skip


def window_means(coarse: np.ndarray, size: int, step: int) -> np.ndarray:
    """Brute force: mean of the ``round(size / step)``-cell square at every cell, by separable box sums."""
    cells = max(1, round(size / step))
    if cells > min(coarse.shape):
        return np.zeros((0, 0))
    view = np.lib.stride_tricks.sliding_window_view
    return view(view(coarse, cells, axis=0).sum(-1), cells, axis=1).sum(-1) / cells**2


def passing_origins(coarse: np.ndarray, height: int, width: int, size: int, step: int, mnf: float) -> set:
    """Brute force: lattice origins inside the scene whose window of cells passes the nodata filter."""
    means = window_means(coarse, size, step)
    i, j = np.nonzero((means > 0) & (1 - means <= mnf + 1e-9))
    keep = (i * step + size <= height) & (j * step + size <= width)
    return set(zip((i[keep] * step).tolist(), (j[keep] * step).tolist(), strict=True))


@given(candidate_cases())
@fuzz(200)
def test_random_candidates_are_exactly_the_passing_lattice_windows_inside_the_scene(c: dict) -> None:
    """Random-chip candidates are exactly the step-lattice origins inside the scene whose (box-sum brute
    force) valid fraction passes ``max_nodata_fraction``, with that fraction as weight."""
    size, step, coarse = c["size"], c["step"], c["coarse"]
    origins, frac = random_candidates(coarse, c["height"], c["width"], size, c["max_nodata"], step)
    got = set(map(tuple, origins.tolist()))
    assert len(got) == len(origins)
    assert got == passing_origins(coarse, c["height"], c["width"], size, step, c["max_nodata"])
    if len(origins):
        assert np.all(origins % step == 0)
        assert np.all(origins[:, 0] + size <= c["height"]) and np.all(origins[:, 1] + size <= c["width"])
        expected = window_means(coarse, size, step)[origins[:, 0] // step, origins[:, 1] // step]
        np.testing.assert_allclose(frac, expected, rtol=1e-9, atol=1e-12)


@given(
    data=st.data(),
    size=st.integers(1, 64),
    align_chips=st.booleans(),
    mnf=st.sampled_from([0.0, 0.3, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
@fuzz(120)
def test_random_sampler_candidates_stay_inside_the_region_on_the_block_lattice(
    data: st.DataObject, size: int, align_chips: bool, mnf: float, seed: int
) -> None:
    """Through build.random_sampler (coarse mask faked): every candidate chip lies inside its scene's
    region, on the block lattice when ``align_chips``, and passes the nodata filter on the scene's own
    coarse mask; when none passes, the error is a GeosegError naming data.max_nodata_fraction (or
    data.nodata for a lone all-nodata scene)."""
    scenes, masks = [], {}
    for k in range(data.draw(st.integers(1, 3))):
        h, w = data.draw(st.integers(size, 300)), data.draw(st.integers(size, 300))
        r0, c0 = data.draw(st.integers(0, h - size)), data.draw(st.integers(0, w - size))
        region = (r0, c0, data.draw(st.integers(r0 + size, h)), data.draw(st.integers(c0 + size, w)))
        block = data.draw(st.one_of(st.none(), st.tuples(st.integers(1, 512), st.integers(1, 512))))
        scene = Scene(f"s{k}.tif", None, (1,), None, None, h, w, True, region=region, block=block)
        scenes.append(scene)
    rng = np.random.default_rng(seed)
    p_valid = rng.random()

    def fake_mask(scene: Scene, step: int, cmap: Any) -> np.ndarray:
        shape = (math.ceil(scene.height / step), math.ceil(scene.width / step))
        masks[scene.image] = (rng.random(shape) < p_valid).astype(np.float64)
        return masks[scene.image]

    cfg = {"chip_size": size, "align_chips": align_chips, "max_nodata_fraction": mnf, "chips_per_epoch": 8}
    with mock.patch.object(build, "coarse_valid_mask", fake_mask):
        try:
            sampler = random_sampler(scenes, cfg, None, seed=0, rank=0, world_size=1)  # type: ignore[arg-type]
        except GeosegError as err:
            assert_names(err, "data.max_nodata_fraction", "data.nodata")
            sampler = None
    found = 0
    for k, scene in enumerate(scenes):
        align = chip_alignment(scene, size) if align_chips else (1, 1)
        step = candidate_step(size, align)
        coarse, (r0, c0, r1, c1) = masks[scene.image], scene.bounds
        i0, j0 = -(-r0 // step), -(-c0 // step)
        inside = passing_origins(coarse[i0 : r1 // step, j0 : c1 // step], r1 - i0 * step, c1 - j0 * step,
                                 size, step, mnf)  # fmt: skip
        lattice = {(r + i0 * step, q + j0 * step) for r, q in inside}
        lattice = {(r, q) for r, q in lattice if r % align[0] == 0 and q % align[1] == 0}
        found += len(lattice)
        if sampler is None:
            continue
        origins = {tuple(map(int, o)) for o in sampler.origins[sampler.scene_of == k]}
        assert origins == lattice
        for r, q in origins:
            assert r0 <= r and r + size <= r1 and c0 <= q and q + size <= c1, "a chip leaves the region"
    assert (sampler is None) == (found == 0)


# ---------------------------------------------------------------------------------------------------
# Nodata layouts


INT_POOL = {"uint8": [0, 1, 7, 255], "int16": [-9999, -1, 0, 3], "uint16": [0, 1, 65535, 300]}
FLOAT_POOL = [0.0, 1.5, -9999.0, np.nan, np.inf, -np.inf]
NODATA = [None, float("nan"), 0, 0.0, -9999, -9999.0, 255, 65535, 1.5, -1, float("inf"), 0.25]


@st.composite
def nodata_layouts(draw: st.DrawFn) -> tuple[np.ndarray, list, str, np.ndarray | None]:
    """A (C, H, W) chip of a random dtype with per-band nodata, NaN and inf sprinkled over some or all
    bands, a validity rule, and (sometimes) a per-band mask of pixels a resampled file does not cover."""
    dtype = draw(st.sampled_from(["uint8", "int16", "uint16", "float32", "float64"]))
    if dtype.startswith("float"):
        big = float(np.finfo(dtype).max)
        pool = [*FLOAT_POOL, big, -big]
    else:
        pool = INT_POOL[dtype]
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    one = draw(st.booleans())
    values = [draw(st.sampled_from([*NODATA, *pool])) for _ in range(1 if one else shape[0])]
    nodata = values * shape[0] if one else values
    arr = draw(hnp.arrays(dtype, shape, elements=st.sampled_from(pool)))
    for b, value in enumerate(nodata):
        if draw(st.booleans()) and value is not None and np.can_cast(np.min_scalar_type(value), dtype):
            rows = draw(hnp.arrays(bool, shape[1:]))
            arr[b, rows] = value  # some pixels of this band at its nodata
    missing = draw(hnp.arrays(bool, shape)) if draw(st.booleans()) else None
    return arr, nodata, draw(st.sampled_from(["any", "all"])), missing


def _is_nodata(band: np.ndarray, value) -> np.ndarray:
    """Where ``band`` equals ``value`` exactly, as numpy compares the values (not their bits)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return np.zeros(band.shape, dtype=bool)
    return band.astype(np.float64) == np.float64(np.array(value).astype(band.dtype, casting="unsafe")) if (
        band.dtype.kind == "f") else band.astype(np.float64) == float(value)  # fmt: skip


@given(nodata_layouts())
@fuzz(400)
def test_invalid_pixels_matches_its_per_pixel_definition(case: tuple) -> None:
    """Invalid = any band (rule any) or every band (rule all) at its own nodata or missing, or any band
    NaN/±inf for float dtypes; None exactly when no pixel is invalid."""
    arr, nodata, rule, missing = case
    at = np.stack([_is_nodata(arr[b], v) for b, v in enumerate(nodata)])
    if missing is not None:
        at |= missing
    expected = at.any(0) if rule == "any" else at.all(0)
    if arr.dtype.kind == "f":
        expected |= ~np.all(np.isfinite(arr), axis=0)
    before = arr.copy()
    got = invalid_pixels(arr, nodata, rule, missing)
    np.testing.assert_array_equal(arr, before)  # the chip itself is untouched
    if not expected.any():
        assert got is None
    else:
        assert got is not None and got.dtype == bool
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------------
# Option checks


@functools.cache
def _load(path: Path) -> dict[str, Any]:
    """``path`` merged over the configs of its own group it inherits (its ``defaults`` list, as Hydra
    composes a group option: mappings merge, lists are replaced)."""
    own = OmegaConf.load(path)
    bases = [b for b in own.pop("defaults", []) or [] if isinstance(b, str) and b != "_self_"]
    merged = OmegaConf.merge(*(OmegaConf.create(_load(path.parent / f"{b}.yaml")) for b in bases), own)
    return OmegaConf.to_container(merged, resolve=False)  # type: ignore[return-value]


def base_config(path: Path) -> dict[str, Any]:
    """A config group YAML as the plain dict it composes to (interpolations left as strings; the checks
    ignore them)."""
    return copy.deepcopy(_load(path))


DATA_KEYS = [
    "chip_size", "max_nodata_fraction", "batch_size", "ignore_index", "num_workers", "pin_memory",
    "bands", "classes", "align_chips", "unknown_labels", "val_stride", "chips_per_epoch", "chips_per_block",
    "read_threads",
]  # fmt: skip
CLASSES = st.lists(
    st.one_of(JUNK, st.fixed_dictionaries({"code": JUNK, "name": st.just("c")})), min_size=0, max_size=4
)
RELATED = {"classes": ("data.ignore_index",), "ignore_index": ("data.classes",)}
MISSING = object()


def use_data_config(cfg: Mapping[str, Any]) -> None:
    """What the builders do with the checked data options; it must not raise on an accepted config."""
    size = int(cfg["chip_size"])
    assert size >= 1 and 0.0 <= float(cfg["max_nodata_fraction"]) <= 1.0 and int(cfg["batch_size"]) >= 1
    cmap = class_map_from(cfg)
    np.full(1, cmap.ignore_index, dtype=cmap.dtype)  # targets hold ignore_index
    stride = int(cfg.get("val_stride") or size)
    grid_windows(3 * size, 2 * size, size, stride)
    assert int(cfg.get("chips_per_epoch", 1)) >= 1  # checked when given
    assert cfg.get("unknown_labels", "error") in ("error", "ignore")


@given(
    key=st.sampled_from(DATA_KEYS),
    value=st.one_of(JUNK, CLASSES, st.just(MISSING)),
    base=st.sampled_from(["demo", "eolearn_slovenia", "sen1floods11"]),
)
@fuzz(500)
def test_data_options_are_accepted_or_refused_in_one_line(key: str, value: Any, base: str) -> None:
    """check_data_config raises only a one-line GeosegError naming the option; what it accepts works."""
    cfg = base_config(CONFIGS / "data" / f"{base}.yaml")
    check_data_config(cfg)  # the shipped configs pass
    if value is MISSING:
        cfg.pop(key, None)
    else:
        cfg[key] = value
    try:
        check_data_config(cfg)
    except GeosegError as err:
        assert_names(err, f"data.{key}", *RELATED.get(key, ()))
        return
    use_data_config(cfg)


TRAINER_KEYS = [
    "max_epochs", "grad_accum_steps", "eval_every", "checkpoint_every", "log_every", "max_nonfinite_steps",
    "max_steps", "train_max_chips",
]  # fmt: skip


def is_whole(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


@given(key=st.sampled_from(TRAINER_KEYS), value=st.one_of(st.integers(), JUNK))
@fuzz(300)
def test_trainer_options_are_accepted_or_refused_in_one_line(key: str, value: Any) -> None:
    """TrainerOptions.from_config raises only a one-line GeosegError naming the option; it accepts exactly
    the whole numbers in range (max_steps may be null; train_max_chips may be 0 or empty = skip)."""
    tr = base_config(CONFIGS / "trainer" / "default.yaml")
    TrainerOptions.from_config(tr)
    (tr["diagnostics"] if key == "train_max_chips" else tr)[key] = value
    if key == "train_max_chips":
        ok = not value or (is_whole(value) and value >= 0)
    else:
        ok = (key == "max_steps" and value is None) or (is_whole(value) and value >= 1)
    try:
        TrainerOptions.from_config(tr)
    except GeosegError as err:
        assert_names(err, f"trainer.{key}", f"trainer.diagnostics.{key}")
        assert not ok, f"refused a valid trainer.{key}={value!r}"
        return
    assert ok, f"accepted trainer.{key}={value!r}"


@given(channels=st.integers(1, 2048), groups=st.integers(-4, 2100), policy=st.sampled_from(GROUP_POLICIES))
@fuzz(400)
def test_group_count_is_the_largest_divisor_allowed_or_a_one_line_error(
    channels: int, groups: int, policy: str
) -> None:
    """The group count divides the channels and is the largest such count <= num_groups (``divisor``),
    or exactly num_groups (``strict``); anything else is a GeosegError naming norm.num_groups."""
    best = max((g for g in range(1, min(groups, channels) + 1) if channels % g == 0), default=None)
    try:
        g = group_count(channels, groups, policy)
    except GeosegError as err:
        assert_names(err, "norm.num_groups")
        assert groups < 1 or (policy == "strict" and channels % groups)
        return
    assert g == (groups if policy == "strict" else best)
    assert channels % g == 0


@given(
    channels=st.integers(1, 512),
    groups=st.one_of(JUNK, st.integers(1, 64)),
    policy=st.one_of(st.sampled_from(GROUP_POLICIES), JUNK),
)
@fuzz(300)
def test_groupnorm_options_of_any_type_are_accepted_or_refused_in_one_line(
    channels: int, groups: Any, policy: Any
) -> None:
    """GroupNorm(channels, num_groups, group_policy) builds a layer whose groups divide the channels,
    or raises a one-line GeosegError naming norm.num_groups or norm.group_policy. num_groups=None is
    the default rule: at most 32 groups of at least 16 channels (one group when narrower)."""
    try:
        layer = GroupNorm(channels, num_groups=groups, group_policy=policy)
    except GeosegError as err:
        assert_names(err, "norm.num_groups", "norm.group_policy")
        return
    limit = 32 if groups is None else groups
    assert channels % layer.num_groups == 0 and 1 <= layer.num_groups <= limit
    if groups is None:
        assert channels // layer.num_groups >= 16 or layer.num_groups == 1
    assert layer(torch.ones(1, channels, 2, 2)).shape == (1, channels, 2, 2)
