"""``geoseg evaluate prediction=... labels=...``: score predicted class maps (metrics.json, a table).

A folder or glob of predictions is scored as a set: pooled metrics over all scenes, and per scene.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from geoseg.config import flag
from geoseg.data.vector_labels import VectorOptions
from geoseg.errors import GeosegError
from geoseg.inference.quicklook import write_quicklook
from geoseg.inference.score_set import format_scenes, is_set, prediction_files, score_set, set_classes
from geoseg.inference.scoring import ScoreOptions, format_table, prediction_classes, score, write_metrics

log = logging.getLogger(__name__)


def metrics_path(prediction: str, output: str | None) -> str:
    """``output=`` when given, else ``<prediction stem>_metrics.json`` beside the prediction, or
    ``metrics.json`` in the folder of a set (the glob's folder)."""
    if output:
        return output
    if os.path.isdir(prediction):
        return os.path.join(prediction, "metrics.json")
    if is_set(prediction):
        return os.path.join(os.path.dirname(prediction) or ".", "metrics.json")
    return f"{os.path.splitext(prediction)[0]}_metrics.json"


def run(cfg: DictConfig) -> dict[str, Any]:
    missing = [k for k in ("prediction", "labels") if not cfg.get(k)]
    if missing:
        raise GeosegError(
            f"missing {', '.join(f'{k}=' for k in missing)}; usage: geoseg evaluate "
            "prediction=PRED.tif|FOLDER labels=LABELS.tif|FOLDER|'TEMPLATE{stem}.tif' [region=[l,t,r,b]] "
            "[output=metrics.json]"
        )
    prediction, labels = str(cfg.prediction), str(cfg.labels)
    given = cfg.get("classes")  # checked where it is used: a list of {code, name, color}, or null
    override = OmegaConf.to_container(given, resolve=True) if OmegaConf.is_config(given) else given
    vector = VectorOptions.from_config(
        OmegaConf.to_container(cfg.vector, resolve=True) if cfg.get("vector") else None  # type: ignore[arg-type]
    )
    region = cfg.get("region")
    if region is not None and not OmegaConf.is_list(region):
        raise GeosegError(f"region={region} must be a list [left, top, right, bottom] of fractions, e.g. "
                          "region=[0,0.5,1,1] for the bottom half of each scene")  # fmt: skip
    region = None if region is None else list(region)
    progress = flag(cfg, "progress", True) and sys.stderr.isatty()
    if is_set(prediction):
        files = prediction_files(prediction)
        classes = set_classes(files, override)  # type: ignore[arg-type]
        opts = ScoreOptions(cfg.get("label_nodata"), vector, region)
        result = score_set(files, labels, classes, opts, progress, source=prediction)
        table = f"{format_table(result)}\n{format_scenes(result)}"
        title = f"{len(result['scenes'])} scenes of {prediction} against {labels} (pooled)"
    else:
        classes = prediction_classes(prediction, override)  # type: ignore[arg-type]
        result = score(prediction, labels, classes, cfg.get("label_nodata"), progress, vector, region)
        table, title = format_table(result), f"{prediction} against {labels}"
    path = metrics_path(prediction, cfg.get("output"))
    write_metrics(path, result)
    if flag(cfg, "quicklook"):
        for scene in result.get("scenes") or [result]:
            picture = f"{os.path.splitext(scene['prediction'])[0]}_errors.png"
            write_quicklook(None, scene["prediction"], classes, picture, labels=scene["labels"],
                            label_opts=ScoreOptions(cfg.get("label_nodata"), vector))  # fmt: skip
            log.info("wrote %s", picture)
    if result["unpredicted_labelled_pixels"]:
        log.warning("%d labelled pixels are nodata in the prediction and were not scored",
                    result["unpredicted_labelled_pixels"])  # fmt: skip
    log.info("%s\n%s\nwrote %s", title, table, path)
    return result
