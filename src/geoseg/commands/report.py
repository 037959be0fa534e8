"""``geoseg report DIR``: results.csv, results.md and PNG plots of a sweep folder."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from geoseg.config import flag
from geoseg.errors import GeosegError
from geoseg.output_policy import check_existing
from geoseg.report.sweep import report_sweep

log = logging.getLogger(__name__)

POSITIONAL = "dir"  # `geoseg report X` sets dir=X


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("dir"):
        raise GeosegError("missing the sweep folder; usage: geoseg report DIR [output=FOLDER] [title=TEXT]")
    existing = check_existing(cfg.get("existing", "overwrite"))
    result = report_sweep(str(cfg.dir), cfg.get("output"), cfg.get("title"), existing)
    ok = sum(r["status"] == "ok" for r in result["rows"])
    log.info(
        "%d finished jobs, %d failed or missing; wrote\n  %s", ok, len(result["problems"]),
        "\n  ".join(result["written"]),
    )  # fmt: skip
    if flag(cfg, "strict") and result["problems"]:
        raise GeosegError(f"{len(result['problems'])} sweep jobs failed or are missing (strict=true)")
    return result
