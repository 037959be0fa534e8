"""``geoseg demo-data``: write the deterministic demo scenes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig

from geoseg.config import flag, whole
from geoseg.data.demo import demo_files, make_demo_data
from geoseg.errors import GeosegError
from geoseg.output_policy import check_existing

log = logging.getLogger(__name__)


def existing_option(cfg: DictConfig) -> str:
    """``existing=``, with ``overwrite=true`` (geoseg 0.1's spelling) read as ``existing=overwrite``."""
    existing = check_existing(cfg.get("existing", "skip"))
    return "overwrite" if flag(cfg, "overwrite") else existing


def run(cfg: DictConfig) -> str:
    root = os.path.abspath(str(cfg.root))
    size, seed, existing = whole(cfg, "size", 64, example=512), whole(cfg, "seed"), existing_option(cfg)
    if os.path.isdir(root) and demo_files(Path(root)) is not None and existing != "overwrite":
        if existing == "error":
            raise GeosegError(f"demo data: '{root}' holds the demo scenes already; pass existing=overwrite "
                              "to rewrite them or existing=skip to keep them")  # fmt: skip
        log.info("demo data already in %s (pass existing=overwrite to rewrite it)", root)
        return root
    start = time.perf_counter()
    make_demo_data(root, size=size, seed=seed, overwrite=existing == "overwrite")
    log.info("wrote the demo scenes to %s in %.1f s", root, time.perf_counter() - start)
    return root
