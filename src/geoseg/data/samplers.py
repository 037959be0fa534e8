"""Chip samplers seeded by (seed, epoch), sharded by rank for DDP, with ``set_epoch``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from geoseg.data.windows import Chip, grid_windows


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")


class RandomChipSampler(Sampler[Chip]):
    """Random training chips, weighted by valid area, the same global draw on every rank.

    Every epoch draws ``num_samples`` chips with a generator seeded by ``(seed, epoch)`` and gives
    rank ``r`` its share: the ranks' shards are disjoint and together make the epoch, and
    ``set_epoch`` changes the draw. ``num_samples`` is rounded down to a multiple of ``world_size``
    (x ``group``) so every rank takes the same number of steps (DDP needs that). Each chip carries
    its own augmentation seed, so results do not depend on the number of DataLoader workers.

    - ``group == 1``: independent chips, without replacement while the candidate pool allows it;
      rank ``r`` takes chips ``r::world_size``.
    - ``group == k > 1``: chips come in runs of ``k`` whose origins share one **cell** (``cells``
      gives each candidate's cell, e.g. the file block holding its origin), so one read of the cell's
      region serves ``k`` chips. A cell is drawn with the summed weight of its candidates, then ``k``
      of its candidates by their weights (without replacement while the cell allows): every chip
      still has its candidate's probability and any candidate offset. Rank ``r`` takes groups
      ``r::world_size``; keep ``k`` a divisor of the batch size so a group never spans two batches.
    """

    def __init__(
        self,
        candidates: Sequence[np.ndarray],
        weights: Sequence[np.ndarray],
        num_samples: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group: int = 1,
        cells: Sequence[np.ndarray] | None = None,
    ) -> None:
        _check_rank(rank, world_size)
        if group < 1 or (group > 1 and cells is None):
            raise ValueError(f"group={group} needs group >= 1 and, above 1, the candidates' cells")
        self.scene_of = np.concatenate([np.full(len(c), i, dtype=np.int64) for i, c in enumerate(candidates)])
        self.origins = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1, 2) for c in candidates])
        w = np.concatenate([np.asarray(x, dtype=np.float64) for x in weights])
        if len(w) == 0 or w.sum() <= 0:
            raise ValueError("no candidate chip has enough valid pixels")
        self.p = w / w.sum()
        self.group = group
        self.num_samples = (num_samples // (world_size * group)) * world_size * group
        if self.num_samples == 0:
            raise ValueError(
                f"num_samples={num_samples} is smaller than the world size {world_size} x group {group}"
            )
        if group > 1:
            self._group_cells(cells)
        self.seed, self.rank, self.world_size, self.epoch, self.start = seed, rank, world_size, 0, 0
        self.class_mix: list[float] | None = None  # expected class fractions of the drawn chips

    def _group_cells(self, cells: Sequence[np.ndarray]) -> None:
        """Sort the candidates by (scene, cell) once; keep each cell's span and summed probability."""
        cell = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1) for c in cells])
        if len(cell) != len(self.p):
            raise ValueError(f"{len(cell)} cells for {len(self.p)} candidates")
        order = np.lexsort((cell, self.scene_of))
        key = np.stack([self.scene_of[order], cell[order]], axis=1)
        first = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
        self._order, self._cell_start = order, first
        self._cell_end = np.r_[first[1:], len(order)]
        self._cell_p = np.add.reduceat(self.p[order], first)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw ``epoch``'s chips; skip this rank's first ``start`` (a run resumed inside the epoch)."""
        if not 0 <= start <= self.num_samples // self.world_size:
            raise ValueError(
                f"start={start} is outside this rank's {self.num_samples // self.world_size} chips"
            )
        self.epoch, self.start = epoch, start

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """Candidate indices of the epoch, in draw order (groups of ``group`` consecutive)."""
        if self.group == 1:
            replace = self.num_samples > np.count_nonzero(self.p)
            return rng.choice(len(self.p), size=self.num_samples, replace=replace, p=self.p)
        groups = self.num_samples // self.group
        cell_p = self._cell_p / self._cell_p.sum()
        picked = rng.choice(len(cell_p), size=groups, replace=groups > np.count_nonzero(cell_p), p=cell_p)
        out = np.empty((groups, self.group), dtype=np.int64)
        for g, c in enumerate(picked):
            members = self._order[self._cell_start[c] : self._cell_end[c]]
            p = self.p[members] / self._cell_p[c]
            replace = self.group > np.count_nonzero(p)
            out[g] = members[rng.choice(len(members), size=self.group, replace=replace, p=p)]
        return out.reshape(-1)

    def epoch_chips(self) -> list[Chip]:
        """All ranks' chips of the current epoch, in draw order (see :meth:`rank_chips` for a shard)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pick = self._draw(rng)
        seeds = rng.integers(0, 2**31 - 1, size=self.num_samples)
        return [
            Chip(int(self.scene_of[i]), int(self.origins[i, 0]), int(self.origins[i, 1]), int(s))
            for i, s in zip(pick, seeds, strict=True)
        ]

    def rank_chips(self, rank: int | None = None) -> list[Chip]:
        """One rank's chips of the current epoch: every ``world_size``-th chip, or group of chips."""
        rank = self.rank if rank is None else rank
        chips = self.epoch_chips()
        k = self.group
        return [c for g in range(rank, len(chips) // k, self.world_size) for c in chips[g * k : (g + 1) * k]]

    def __iter__(self) -> Iterator[Chip]:
        return iter(self.rank_chips()[self.start :])

    def __len__(self) -> int:
        return self.num_samples // self.world_size - self.start


class GridChipSampler(Sampler[Chip]):
    """Grid chips over every scene (last row/column clamped inside), sharded ``rank::world_size``.

    Deterministic: ``set_epoch`` exists for a uniform interface and changes nothing. Shards may
    differ in length by one chip; evaluation all-reduces a confusion matrix, so that is exact.
    """

    def __init__(
        self,
        bounds: Sequence[tuple[int, int, int, int]],
        size: int,
        stride: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        max_chips: int | None = None,
    ) -> None:
        """``bounds``: (row0, col0, row1, col1) per scene, e.g. ``(0, 0, height, width)``.

        ``max_chips`` keeps an evenly spaced subset of the grid, spread over all scenes.
        """
        _check_rank(rank, world_size)
        self.chips = [
            Chip(i, r0 + r, c0 + c, 0)
            for i, (r0, c0, r1, c1) in enumerate(bounds)
            for r, c in grid_windows(r1 - r0, c1 - c0, size, stride)
        ]
        if max_chips is not None and len(self.chips) > max_chips:
            keep = np.linspace(0, len(self.chips) - 1, max(1, max_chips)).round().astype(int)
            self.chips = [self.chips[k] for k in keep]
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        """No-op: the grid is the same every epoch."""

    def __iter__(self) -> Iterator[Chip]:
        return iter(self.chips[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(self.chips[self.rank :: self.world_size])
