"""Score a set of predicted scenes: pair each class map with its labels, pool the confusion matrices.

The pooled metrics are those of one mosaic of all the scenes (the numbers a paper reports: every
labelled pixel weighs the same), and each scene's own metrics are kept beside them.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from geoseg.classes import ClassInfo
from geoseg.data.remote import is_remote
from geoseg.errors import GeosegError
from geoseg.inference.scoring import (
    SceneCounts,
    ScoreOptions,
    check_class_map,
    check_counts,
    count_scene,
    prediction_classes,
    summarize,
)

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
SIDECAR_SUFFIXES = ("_probs.tif", "_probs.tiff")  # written beside a class map by `geoseg predict`
LABEL_SUFFIXES = (".tif", ".tiff", ".vrt", ".geojson", ".json", ".gpkg", ".shp", ".fgb")


def is_set(prediction: str) -> bool:
    """A folder or a glob pattern, rather than one file."""
    return os.path.isdir(prediction) or glob.has_magic(prediction)


def prediction_files(prediction: str) -> list[str]:
    """The class maps of a folder or glob, sorted; ``*_probs.tif`` and hidden files are skipped, and a
    file that is not a class map (see :func:`~geoseg.inference.scoring.check_class_map`) is refused."""
    pattern = os.path.join(prediction, "*") if os.path.isdir(prediction) else prediction
    found = sorted(
        p for p in glob.glob(pattern)
        if os.path.isfile(p) and p.lower().endswith(RASTER_SUFFIXES)
        and not p.lower().endswith(SIDECAR_SUFFIXES) and not os.path.basename(p).startswith(".")
    )  # fmt: skip
    if not found:
        raise GeosegError(
            f"prediction={prediction} matches no class map (.tif, not *_probs.tif); pass the folder "
            "`geoseg predict` wrote or a glob such as 'preds/*.tif'"
        )
    for path in found:  # a file the name does not tell: refused before any is scored
        check_class_map(path, in_set=True)
    return found


def label_for(prediction: str, labels: str) -> str:
    """The label file of one prediction: ``labels`` as a template ({stem}, {name}), or the file of the
    same name (else the same stem, any label suffix) in the ``labels`` folder."""
    name = os.path.basename(prediction)
    stem = os.path.splitext(name)[0]
    if "{" in labels:
        try:
            path = labels.format(stem=stem, name=name)
        except (KeyError, IndexError, ValueError) as err:
            raise GeosegError(
                f"labels={labels} is not a valid template ({err}); use {{stem}} or {{name}} of the "
                "prediction file, e.g. labels='truth/{stem}_mask.tif'"
            ) from None
        if is_remote(path):  # a URL is not listed: a missing one fails in one line when it is read
            return path
        candidates = [path]
    elif os.path.isdir(labels):
        candidates = [os.path.join(labels, name)] + [os.path.join(labels, stem + s) for s in LABEL_SUFFIXES]
    else:
        raise GeosegError(
            f"labels={labels} is neither a folder nor a template; for a set of predictions pass the "
            "labels folder (files named as the predictions) or a template such as 'truth/{stem}.tif'"
        )
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise GeosegError(
        f"no labels for prediction '{prediction}': looked for {candidates[0]}; name the label files as "
        "the predictions or pass a template labels='FOLDER/{stem}_SUFFIX.tif'"
    )


def score_set(
    predictions: Sequence[str],
    labels: str,
    classes: ClassInfo,
    opts: ScoreOptions | None = None,
    progress: bool = False,
    source: str = "",
) -> dict[str, Any]:
    """Pooled metrics of all scenes (as one mosaic) with each scene's metrics under ``scenes``.

    Every pair is found before any is scored, so a missing label file fails at once. A scene with
    nothing to score (no label in ``region``) is a warning; the pooled set must score something.
    """
    opts = opts or ScoreOptions()
    pairs = [(p, label_for(p, labels)) for p in predictions]
    total = SceneCounts(matrix=_zeros(classes))
    scenes = []
    for prediction, label in tqdm(pairs, desc="scenes", unit="scene", disable=not progress):
        counts = count_scene(prediction, label, classes, opts)
        if counts.labelled == 0:
            log.warning("%s: no labelled pixel to score (in region=%s); skipped", prediction, opts.region)
            continue
        check_counts(prediction, label, classes, counts)
        scenes.append(summarize(counts, classes, prediction, label, opts.region))
        total = total + counts
    check_counts(source, labels, classes, total)
    result = summarize(total, classes, source, labels, opts.region)
    result["scenes"] = scenes
    return result


def _zeros(classes: ClassInfo) -> torch.Tensor:
    n = len(classes.codes) + 1  # the last column holds out-of-range predictions, as in count_scene
    return torch.zeros(n, n, dtype=torch.int64)


def set_classes(predictions: Sequence[str], override: list[dict] | None) -> ClassInfo:
    """``classes=`` when given, else the class list every prediction carries (they must agree)."""
    if override is not None:
        return prediction_classes(predictions[0], override)
    first = prediction_classes(predictions[0], None)
    for path in predictions[1:]:
        other = prediction_classes(path, None)
        if (other.codes, other.names) != (first.codes, first.names):
            raise GeosegError(
                f"prediction '{path}' carries classes {other.names} but '{predictions[0]}' carries "
                f"{first.names}; score predictions of one model together, or pass classes=... to override"
            )
    return first


def format_scenes(result: dict[str, Any]) -> str:
    """One line per scene: its file, mIoU, the majority-class baseline's, accuracy and scored pixels."""
    names = [os.path.basename(s["prediction"]) for s in result["scenes"]]
    width = max(5, *(len(n) for n in names)) if names else 5

    def fmt(v: float | None) -> str:
        return "     -" if v is None or math.isnan(v) else f"{v:6.3f}"

    lines = [f"{'scene':<{width}}  {'mIoU':>6}  {'base':>6}  {'acc':>6}  {'pixels':>10}"]
    for name, s in zip(names, result["scenes"], strict=True):
        lines.append(f"{name:<{width}}  {fmt(s['miou'])}  {fmt(s.get('majority_baseline_miou'))}  "
                     f"{fmt(s['accuracy'])}  {s['pixels']:>10}")  # fmt: skip
    lines.append("base: the mIoU of each scene's most frequent label class predicted everywhere")
    return "\n".join(lines)
