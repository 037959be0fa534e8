"""``geoseg train``: train a model on the configured data; outputs go to Hydra's run folder."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from geoseg.engine.fit import fit


def run(cfg: DictConfig) -> dict[str, Any]:
    return fit(cfg, HydraConfig.get().runtime.output_dir)
