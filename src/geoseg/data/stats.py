"""Nodata-aware per-band statistics written to ``stats.json``: computed, validated, loaded, cached."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch.distributed

from geoseg.data.remote import file_name, local_or_remote_abspath, shown
from geoseg.data.scenes import Scene
from geoseg.data.stats_accumulate import accumulate, accumulate_sharded
from geoseg.errors import GeosegError
from geoseg.io import atomic_write_text
from geoseg.output_policy import KINDS, describe

log = logging.getLogger(__name__)

PERCENTILES = (2.0, 98.0)


@dataclass
class BandStats:
    """Per-band statistics over valid pixels, tied to the band list they were computed for."""

    bands: list[int]
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    p2: list[float]
    p98: list[float]
    count: int
    scenes: list[str]
    nodata: list[float | None] = field(default_factory=list)  # per scene, as used for the statistics
    key: str = ""  # stats_key of the scenes they describe ("" in files written before keys)
    sample: float = 1.0  # fraction of the blocks read (geoseg stats sample=)
    mean_se: list[float] = field(default_factory=list)  # standard error of each mean when sample < 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def validate(self, path: str) -> BandStats:
        """Fail in one line when the statistics cannot normalise anything (hand-edited or damaged)."""
        n = len(self.bands)
        for key in ("mean", "std", "min", "max"):
            values = getattr(self, key)
            if not isinstance(values, list) or len(values) != n:
                got = len(values) if isinstance(values, list) else repr(values)
                raise GeosegError(
                    f"statistics '{path}': '{key}' has {got} values for {n} bands; delete it (or run "
                    "`geoseg stats`) to recompute."
                )
        mean, std = np.asarray(self.mean, dtype=np.float64), np.asarray(self.std, dtype=np.float64)
        bad = [(i, "mean", m) for i, m in enumerate(mean) if not np.isfinite(m)] + [
            (i, "std", v) for i, v in enumerate(std) if not np.isfinite(v) or v < 0
        ]
        if bad:
            i, key, value = bad[0]
            raise GeosegError(
                f"statistics '{path}': band {self.bands[i]} has {key} {value}, which cannot normalise it "
                "(a mean must be finite, a std finite and >= 0); delete it (or run `geoseg stats`) to "
                "recompute."
            )
        return self

    def check_matches(self, scenes: Sequence[Scene], path: str) -> None:
        """Fail when the data now selects other bands, nodata, region or files, or a file changed."""
        self.check_bands(scenes[0].bands, path)
        now = [_nodata_key(nodata_summary(s)) for s in scenes]
        if self.nodata and [_nodata_key(v) for v in self.nodata] != now:
            raise GeosegError(
                f"'{path}' was computed with image nodata {self.nodata} but the data now uses "
                f"{[nodata_summary(s) for s in scenes]}; delete it or run `geoseg stats` again."
            )
        if self.key and self.key != stats_key(scenes):
            raise GeosegError(
                f"'{path}' was computed from other data than the train split now has (other scene files, "
                "region, band files or rule, or a file rewritten since: its size or time changed); delete "
                "it or run `geoseg stats` again."
            )
        if sorted(file_name(p) for p in self.scenes) != sorted(file_name(s.image) for s in scenes):
            log.warning("'%s' was computed from other scene files than the current train split", path)

    def check_bands(self, bands: Sequence[int], path: str) -> None:
        if list(bands) != list(self.bands):
            raise GeosegError(
                f"'{path}' was computed for bands {self.bands} but the data selects {list(bands)}; "
                "delete it or run `geoseg stats` again."
            )


def stats_key(scenes: Sequence[Scene]) -> str:
    """A short hash of everything the statistics depend on: per scene its files (path, size,
    modification time, bands, nodata, resampling), region and validity rule (and a series date's mask),
    in order."""
    record = []
    for scene in scenes:
        files = []
        for f in scene.stack:
            try:
                st = os.stat(f.path)
                seen = [st.st_size, st.st_mtime_ns]
            except OSError:  # not a local file (/vsicurl/ and the like): its name only
                seen = []
            files.append([local_or_remote_abspath(f.path), *seen, list(f.bands), _nodata_key(list(f.nodata)),
                          f.resampling])  # fmt: skip
        entry = [files, list(scene.bands), list(scene.bounds), scene.invalid, scene.grid is not None]
        if scene.date_mask is not None:  # a series date's mask (file and codes) decides its valid pixels
            mask = scene.date_mask
            entry.append([local_or_remote_abspath(mask.file.path), list(mask.file.bands), list(mask.invalid)])
        record.append(entry)
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:16]


def _nodata_key(value: float | list | None) -> str:
    if isinstance(value, list):
        return repr([_nodata_key(v) for v in value])
    return "none" if value is None else repr(float(value))


def compute_stats(
    scenes: Sequence[Scene], progress: bool = True, workers: int = 1, rank: int = 0, world_size: int = 1,
    sample: float = 1.0,
) -> BandStats:  # fmt: skip
    """Mean/std/min/max over valid pixels of all scenes, plus p2/p98 from a fixed-size uniform sample
    (memory does not grow with the archive; see :mod:`geoseg.data.stats_accumulate`).

    A pixel is valid by the scene's rule (``data.invalid``), and a band's own nodata value never
    enters that band's statistics. ``workers`` > 1 reads the scenes in that many processes; with
    ``world_size`` > 1 (every rank of an initialised process group calls it) each rank reads its
    shard and the partial results merge, so every rank returns the same statistics.
    """
    if not scenes:
        raise GeosegError("no scenes to compute statistics from; check data.root and the train split.")
    if not 0 < sample <= 1:
        raise GeosegError(f"sample={sample} must be a fraction of the blocks in (0, 1]; 1 reads them all.")
    bands = list(scenes[0].bands)
    for s in scenes:
        if list(s.bands) != bands:
            raise GeosegError(f"scene '{s.image}' selects bands {list(s.bands)}, others {bands}.")
    if world_size > 1:
        acc = accumulate_sharded(scenes, rank, world_size)
    else:
        acc = accumulate(scenes, progress=progress, workers=workers, fraction=sample)
    if acc.count == 0 and len(scenes) == 1:
        raise GeosegError(
            f"the only scene '{scenes[0].image}' is all nodata (image nodata {scenes[0].nodata}); "
            "check data.nodata or add scenes with valid pixels."
        )
    if acc.count == 0:
        raise GeosegError(
            f"every pixel of the {len(scenes)} scenes is nodata; check data.nodata and the files."
        )
    pct = acc.sample.percentiles(PERCENTILES)
    stats = BandStats(
        bands=bands,
        mean=acc.mean.tolist(),
        std=acc.std().tolist(),
        min=acc.lo.tolist(),
        max=acc.hi.tolist(),
        p2=[p[0] for p in pct],
        p98=[p[1] for p in pct],
        count=int(acc.count),
        scenes=[shown(s.image) for s in scenes],  # a record, without a signed URL's token
        nodata=[nodata_summary(s) for s in scenes],
        key=stats_key(scenes),
        sample=sample,
        mean_se=acc.mean_se().tolist() if sample < 1 else [],
    )
    warn_nodata_in_statistics(stats, scenes)
    return stats


def nodata_summary(scene: Scene) -> float | list[float | None] | None:
    """A scene's nodata for stats.json: one value when its selected bands share it, else one per band."""
    values = list(scene.band_nodata)
    return values[0] if len({repr(v) for v in values}) == 1 else values


SENTINELS = (-32768.0, -9999.0, -99999.0, -3.4028234663852886e38)  # values that often mean "no data"


def warn_nodata_in_statistics(stats: BandStats, scenes: Sequence[Scene]) -> None:
    """Warn when a band's min or max is another band's nodata value, or a value that often means nodata."""
    names = scenes[0].band_names
    for i, band in enumerate(stats.bands):
        own = {repr(s.band_nodata[i]) for s in scenes}
        others = {v for s in scenes for j, v in enumerate(s.band_nodata) if j != i and v is not None}
        for what, value in (("min", stats.min[i]), ("max", stats.max[i])):
            if repr(value) in own:
                continue
            why = "the nodata value of another band" if value in others else (
                "a value that often marks missing pixels" if value in SENTINELS else None)  # fmt: skip
            if why is None:
                continue
            label = names[band - 1] if names and names[band - 1] else f"band {band}"
            log.warning(
                "band %d (%s) has %s %s, %s; if it marks missing pixels, declare it as that band's nodata "
                "(data.files[...].nodata or data.nodata) so it is excluded, then recompute the statistics",
                band, label, what, f"{value:g}", why,
            )  # fmt: skip


def load_stats(path: str, option: str = "data.stats_path") -> BandStats:
    """The statistics in ``path``; a one-line error naming ``option`` when it is no statistics file
    (a folder, a raster, a label ...), never advice to delete a file geoseg did not write."""
    if os.path.isdir(path):
        raise GeosegError(f"{option}='{path}' is a folder; name a .json file (the statistics are computed "
                          "and saved there when it is missing)")  # fmt: skip
    if not KINDS["stats"].recognise(path):
        raise GeosegError(f"{option}='{path}' is {describe(path)}, not a band statistics file geoseg wrote; "
                          f"point {option} at a new .json file (computed there) or set it to null (computed "
                          "in data.cache_dir)")  # fmt: skip
    try:
        with open(path) as fh:
            stats = BandStats(**json.load(fh))
    except (OSError, ValueError, TypeError) as err:
        raise GeosegError(
            f"cannot read statistics file '{path}' ({err}); it was written by another geoseg "
            f"version: point {option} at a new file to recompute them"
        ) from None
    return stats.validate(path)


def save_stats(stats: BandStats, path: str) -> None:
    atomic_write_text(path, stats.to_json(), "band statistics")


def load_or_compute_stats(
    scenes: Sequence[Scene], path: str, progress: bool = True, workers: int = 1, rank: int = 0,
    world_size: int = 1,
) -> BandStats:  # fmt: skip
    """Cached statistics from ``path`` (checked against what they describe), computed and saved when
    missing. Under DDP every rank calls it: each computes a shard and rank 0 writes the file."""
    exists = os.path.exists(path)
    if world_size > 1:  # one decision for all ranks (rank 0 may write the file while others look)
        flag = [exists]
        torch.distributed.broadcast_object_list(flag, src=0)
        exists = bool(flag[0])
    if exists:
        stats = load_stats(path)
        stats.check_matches(scenes, path)
        return stats
    stats = compute_stats(scenes, progress=progress, workers=workers, rank=rank, world_size=world_size)
    if rank == 0:
        save_stats(stats, path)
    return stats
