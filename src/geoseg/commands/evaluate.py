"""``geoseg evaluate prediction=... labels=...``: score predicted class maps (metrics.json, a table).

A folder or glob of predictions is scored as a set: pooled metrics over all scenes, and per scene.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from geoseg.config import flag
from geoseg.data.remote import shown
from geoseg.data.scenes import region_pixels
from geoseg.data.vector_labels import VectorOptions
from geoseg.errors import GeosegError
from geoseg.inference.quicklook import write_quicklook
from geoseg.inference.score_set import format_scenes, is_set, prediction_files, score_set, set_classes
from geoseg.inference.scoring import ScoreOptions, format_table, prediction_classes, score, write_metrics
from geoseg.output_policy import check_existing, claim_output

log = logging.getLogger(__name__)


def metrics_path(prediction: str, output: str | None, region: list[float] | None = None) -> str:
    """``output=`` when given, else ``<prediction stem>_metrics.json`` beside the prediction, or
    ``metrics.json`` in the folder of a set (the glob's folder); a ``region=`` score is named apart
    (``<stem>_metrics_region-0-0.5-1-1.json``), so it never replaces the whole-scene one."""
    if output:
        return output
    suffix = "" if region is None else "_region-" + "-".join(f"{float(v):g}" for v in region)
    if os.path.isdir(prediction):
        return os.path.join(prediction, f"metrics{suffix}.json")
    if is_set(prediction):
        return os.path.join(os.path.dirname(prediction) or ".", f"metrics{suffix}.json")
    return f"{os.path.splitext(prediction)[0]}_metrics{suffix}.json"


def errors_picture(prediction: str) -> str:
    """``pred.tif`` -> ``pred_errors.png``: the quicklook of a scored prediction."""
    return f"{os.path.splitext(prediction)[0]}_errors.png"


def label_inputs(labels: str) -> list[str]:
    """The files ``labels=`` may name (a file, a folder's files, a template's matches): never outputs."""
    if os.path.isdir(labels):
        return glob.glob(os.path.join(glob.escape(labels), "*"))
    if "{" in labels:
        return glob.glob(re.sub(r"\{\w+\}", "*", labels))
    return [labels]


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
    region_pixels(region, 1, 1, "region=")  # checked before the metrics file is named after it
    progress = flag(cfg, "progress", True) and sys.stderr.isatty()
    existing = check_existing(cfg.get("existing", "overwrite"))
    files = prediction_files(prediction) if is_set(prediction) else [prediction]
    inputs = [*files, *label_inputs(labels)]
    path = metrics_path(prediction, cfg.get("output"), region)
    if not claim_output(path, "metrics", existing, inputs):
        return {}
    pictures = [errors_picture(f) for f in files] if flag(cfg, "quicklook") else []
    for picture in pictures:
        claim_output(picture, "picture", "overwrite" if existing == "skip" else existing, inputs, "quicklook")
    if is_set(prediction):
        classes = set_classes(files, override)  # type: ignore[arg-type]
        opts = ScoreOptions(cfg.get("label_nodata"), vector, region)
        result = score_set(files, labels, classes, opts, progress, source=prediction)
        table = f"{format_table(result)}\n{format_scenes(result)}"
        title = f"{len(result['scenes'])} scenes of {shown(prediction)} against {shown(labels)} (pooled)"
    else:
        classes = prediction_classes(prediction, override)  # type: ignore[arg-type]
        result = score(prediction, labels, classes, cfg.get("label_nodata"), progress, vector, region)
        table, title = format_table(result), f"{shown(prediction)} against {shown(labels)}"
    write_metrics(path, result)
    if pictures:
        for scene in result.get("scenes") or [result]:
            picture = errors_picture(scene["prediction"])
            write_quicklook(None, scene["prediction"], classes, picture, labels=scene["labels"],
                            label_opts=ScoreOptions(cfg.get("label_nodata"), vector))  # fmt: skip
            log.info("wrote %s", picture)
    if result["unpredicted_labelled_pixels"]:
        log.warning("%d labelled pixels are nodata in the prediction and were not scored",
                    result["unpredicted_labelled_pixels"])  # fmt: skip
    log.info("%s\n%s\nwrote %s", title, table, path)
    return result
