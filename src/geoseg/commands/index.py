"""``geoseg index``: inspect every scene of the splits now, so `geoseg train` starts from the index.

The scene index (``scene-index.json`` in ``data.cache_dir``) caches what start-up inspection learns
per scene and the train split's coarse validity masks and class counts; entries of unchanged files
are reused, so running it again after adding scenes inspects only the new ones.
"""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig, OmegaConf

from geoseg.config import as_dict, flag
from geoseg.data.build import load_scenes, random_sampler
from geoseg.data.data_options import class_map_from, scene_index
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, int]:
    data = as_dict(cfg.data)
    if not data.get("index", True):
        raise GeosegError("data.index=false: there is no scene index to build; drop the override.")
    splits, progress = cfg.get("splits"), flag(cfg, "progress", True)
    if not (OmegaConf.is_list(splits) or isinstance(splits, list | tuple)) or not splits:
        raise GeosegError(f"splits={splits!r} must be a list of data.splits entries, e.g. splits=[train,val]")
    start, counts = time.perf_counter(), {}
    for split in splits:
        scenes = load_scenes(data, str(split), progress=progress)
        counts[str(split)] = len(scenes)
        if split == "train":  # the sampler's coarse masks and class counts go into the index too
            random_sampler(scenes, data, class_map_from(data), seed=0, rank=0, world_size=1)
    index = scene_index(data)
    found = ", ".join(f"{n} {s} scenes" for s, n in counts.items())
    log.info("scene index %s: %d entries; %s in %.1f s", index.path, len(index.entries), found,
             time.perf_counter() - start)  # fmt: skip
    return counts
