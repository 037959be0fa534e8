"""``geoseg demo-data``: write the deterministic demo scenes."""

from __future__ import annotations

import logging
import os
import time

from omegaconf import DictConfig

from geoseg.config import flag, whole
from geoseg.data.demo import make_demo_data

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> str:
    root = os.path.abspath(str(cfg.root))
    size, seed, overwrite = whole(cfg, "size", 64, example=512), whole(cfg, "seed"), flag(cfg, "overwrite")
    if os.path.exists(root) and not overwrite:
        log.info("demo data already in %s (pass overwrite=true to rewrite it)", root)
        return root
    start = time.perf_counter()
    make_demo_data(root, size=size, seed=seed, overwrite=overwrite)
    log.info("wrote the demo scenes to %s in %.1f s", root, time.perf_counter() - start)
    return root
