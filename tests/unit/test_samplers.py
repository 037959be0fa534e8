"""Samplers: disjoint DDP shards that cover the epoch, set_epoch, determinism."""

import numpy as np
import pytest

from geoseg.data.samplers import GridChipSampler, RandomChipSampler


def _candidates():
    grid = np.stack(np.meshgrid(np.arange(0, 300, 4), np.arange(0, 80, 4), indexing="ij"), -1).reshape(-1, 2)
    cands = [grid[:300], grid[300:500]]
    weights = [np.ones(300), np.full(200, 0.5)]
    return cands, weights


def test_two_ranks_get_disjoint_chips_that_cover_the_epoch():
    cands, weights = _candidates()
    full = RandomChipSampler(cands, weights, num_samples=100, seed=3)
    shards = [list(RandomChipSampler(cands, weights, 100, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 50
    keys = [{(c.scene, c.row, c.col, c.seed) for c in s} for s in shards]
    assert not keys[0] & keys[1]
    assert sorted(shards[0] + shards[1]) == sorted(full)


def test_set_epoch_changes_the_order_and_is_reproducible():
    cands, weights = _candidates()
    s = RandomChipSampler(cands, weights, 64, seed=0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    s.set_epoch(0)
    assert list(s) == e0
    assert list(RandomChipSampler(cands, weights, 64, seed=1)) != e0


def test_no_duplicate_chips_while_the_pool_allows():
    cands, weights = _candidates()
    chips = list(RandomChipSampler(cands, weights, 400, seed=0))
    assert len({(c.scene, c.row, c.col) for c in chips}) == 400


def test_num_samples_rounds_down_to_the_world_size():
    cands, weights = _candidates()
    assert len(RandomChipSampler(cands, weights, 101, rank=2, world_size=4)) == 25
    with pytest.raises(ValueError):
        RandomChipSampler(cands, weights, 10, rank=2, world_size=2)


def test_grid_sampler_shards_cover_the_grid_once():
    shapes = [(0, 0, 40, 48), (0, 0, 33, 20)]
    full = list(GridChipSampler(shapes, 16))
    shards = [list(GridChipSampler(shapes, 16, rank=r, world_size=3)) for r in range(3)]
    assert sorted(c for shard in shards for c in shard) == sorted(full)
    assert len(set(full)) == len(full)


def test_grid_sampler_stays_inside_each_region():
    chips = list(GridChipSampler([(5, 30, 40, 48)], 16))
    assert {(c.row, c.col) for c in chips} == {(5, 30), (21, 30), (24, 30), (5, 32), (21, 32), (24, 32)}
