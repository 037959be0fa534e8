"""``geoseg evaluate prediction=PRED.tif labels=LABELS.tif``: metrics.json and a printed table."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from geoseg.data.vector_labels import VectorOptions
from geoseg.errors import GeosegError
from geoseg.inference.scoring import format_table, prediction_classes, score, write_metrics

log = logging.getLogger(__name__)


def metrics_path(prediction: str, output: str | None) -> str:
    """``output=`` when given, else ``<prediction stem>_metrics.json`` beside the prediction."""
    return output or f"{os.path.splitext(prediction)[0]}_metrics.json"


def run(cfg: DictConfig) -> dict[str, Any]:
    missing = [k for k in ("prediction", "labels") if not cfg.get(k)]
    if missing:
        raise GeosegError(
            f"missing {', '.join(f'{k}=' for k in missing)}; usage: geoseg evaluate prediction=PRED.tif "
            "labels=LABELS.tif [output=metrics.json]"
        )
    prediction, labels = str(cfg.prediction), str(cfg.labels)
    override = OmegaConf.to_container(cfg.classes, resolve=True) if cfg.get("classes") else None
    classes = prediction_classes(prediction, override)  # type: ignore[arg-type]
    vector = OmegaConf.to_container(cfg.vector, resolve=True) if cfg.get("vector") else None
    result = score(
        prediction,
        labels,
        classes,
        cfg.get("label_nodata"),
        bool(cfg.progress) and sys.stderr.isatty(),
        vector=VectorOptions.from_config(vector),
    )
    path = metrics_path(prediction, cfg.get("output"))
    write_metrics(path, result)
    if result["unpredicted_labelled_pixels"]:
        log.warning("%d labelled pixels are nodata in the prediction and were not scored",
                    result["unpredicted_labelled_pixels"])  # fmt: skip
    log.info("%s against %s\n%s\nwrote %s", prediction, labels, format_table(result), path)
    return result
