"""``geoseg train``: train a model on the configured data; outputs go to Hydra's run folder."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from geoseg.engine.fit import fit
from geoseg.engine.preemption import INTERRUPTED


def run(cfg: DictConfig) -> dict[str, Any]:
    result = fit(cfg, HydraConfig.get().runtime.output_dir)
    if result.get("preempted") == "SIGINT":  # Ctrl-C: last.pt is written; say so with the shell's status
        raise SystemExit(INTERRUPTED)
    return result
