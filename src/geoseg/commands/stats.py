"""``geoseg stats``: nodata-aware per-band statistics of a split -> stats.json."""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig

from geoseg.config import as_dict, flag
from geoseg.data.build import load_scenes, warn_repeated_bands
from geoseg.data.data_options import stats_path
from geoseg.data.scenes import scene_files
from geoseg.data.stats import BandStats, compute_stats, load_stats, save_stats, stats_key
from geoseg.errors import GeosegError
from geoseg.output_policy import check_existing, claim_output

log = logging.getLogger(__name__)


def format_table(stats: BandStats) -> str:
    """A plain-text table of the statistics, one row per band."""
    se = stats.mean_se or [None] * len(stats.bands)
    head = f"{'band':>5} {'mean':>12} {'std':>12} {'min':>12} {'max':>12} {'p2':>12} {'p98':>12}"
    head += f" {'mean s.e.':>12}" if stats.mean_se else ""
    rows = [
        f"{b:>5} {m:>12.4g} {s:>12.4g} {lo:>12.4g} {hi:>12.4g} {p2:>12.4g} {p98:>12.4g}"
        + (f" {e:>12.3g}" if e is not None else "")
        for b, m, s, lo, hi, p2, p98, e in zip(
            stats.bands, stats.mean, stats.std, stats.min, stats.max, stats.p2, stats.p98, se, strict=True
        )
    ]
    return "\n".join([head, *rows])


def run(cfg: DictConfig) -> BandStats:
    data = as_dict(cfg.data)
    scenes = load_scenes(data, str(cfg.split))
    warn_repeated_bands(scenes)
    workers, sample = cfg.get("workers", 1), cfg.get("sample", 1.0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise GeosegError(f"workers={workers!r} must be a whole number of processes, at least 1")
    if isinstance(sample, bool) or not isinstance(sample, (int, float)):
        raise GeosegError(f"sample={sample!r} must be a fraction of the blocks in (0, 1]; 1 reads them all.")
    existing = check_existing(cfg.get("existing", "overwrite"))
    files = scene_files(scenes)
    scenes = [d for s in scenes for d in s.date_scenes()]  # a series: every date's valid pixels, as training
    output = os.path.abspath(str(cfg.output)) if cfg.output else stats_path(data, stats_key(scenes))
    if not claim_output(output, "stats", existing, files):
        return load_stats(output, "output")
    stats = compute_stats(scenes, progress=flag(cfg, "progress", True), workers=workers, sample=float(sample))
    save_stats(stats, output)
    log.info("%d scenes (dates of a series count each), %d valid pixels\n%s", len(scenes), stats.count,
             format_table(stats))  # fmt: skip
    log.info("wrote %s", output)
    return stats
