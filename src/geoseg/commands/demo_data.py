"""``geoseg demo-data``: write the deterministic demo scenes."""

from __future__ import annotations

import logging
import os
import time

from omegaconf import DictConfig

from geoseg.data.demo import make_demo_data

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> str:
    root = os.path.abspath(str(cfg.root))
    if os.path.exists(root) and not cfg.overwrite:
        log.info("demo data already in %s (pass overwrite=true to rewrite it)", root)
        return root
    start = time.perf_counter()
    make_demo_data(root, size=int(cfg.size), seed=int(cfg.seed), overwrite=bool(cfg.overwrite))
    log.info("wrote the demo scenes to %s in %.1f s", root, time.perf_counter() - start)
    return root
