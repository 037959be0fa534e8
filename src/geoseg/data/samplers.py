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

    Every epoch draws ``num_samples`` chips with a generator seeded by ``(seed, epoch)`` (without
    replacement while the candidate pool allows it) and gives rank ``r`` the chips ``r::world_size``.
    So the ranks' shards are disjoint and together make the epoch; ``set_epoch`` changes the draw.
    ``num_samples`` is rounded down to a multiple of ``world_size`` so every rank takes the same
    number of steps (DDP needs that). Each chip carries its own augmentation seed, so results do not
    depend on the number of DataLoader workers.
    """

    def __init__(
        self,
        candidates: Sequence[np.ndarray],
        weights: Sequence[np.ndarray],
        num_samples: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_rank(rank, world_size)
        self.scene_of = np.concatenate([np.full(len(c), i, dtype=np.int64) for i, c in enumerate(candidates)])
        self.origins = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1, 2) for c in candidates])
        w = np.concatenate([np.asarray(x, dtype=np.float64) for x in weights])
        if len(w) == 0 or w.sum() <= 0:
            raise ValueError("no candidate chip has enough valid pixels")
        self.p = w / w.sum()
        self.num_samples = (num_samples // world_size) * world_size
        if self.num_samples == 0:
            raise ValueError(f"num_samples={num_samples} is smaller than the world size {world_size}")
        self.seed, self.rank, self.world_size, self.epoch, self.start = seed, rank, world_size, 0, 0
        self.class_mix: list[float] | None = None  # expected class fractions of the drawn chips

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Draw ``epoch``'s chips; skip this rank's first ``start`` (a run resumed inside the epoch)."""
        if not 0 <= start <= self.num_samples // self.world_size:
            raise ValueError(
                f"start={start} is outside this rank's {self.num_samples // self.world_size} chips"
            )
        self.epoch, self.start = epoch, start

    def epoch_chips(self) -> list[Chip]:
        """All ranks' chips of the current epoch, in order (rank r takes ``[r::world_size]``)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        replace = self.num_samples > np.count_nonzero(self.p)
        pick = rng.choice(len(self.p), size=self.num_samples, replace=replace, p=self.p)
        seeds = rng.integers(0, 2**31 - 1, size=self.num_samples)
        return [
            Chip(int(self.scene_of[i]), int(self.origins[i, 0]), int(self.origins[i, 1]), int(s))
            for i, s in zip(pick, seeds, strict=True)
        ]

    def __iter__(self) -> Iterator[Chip]:
        return iter(self.epoch_chips()[self.rank :: self.world_size][self.start :])

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
