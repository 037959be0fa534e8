"""Score a predicted class map against a label raster on the prediction's grid, block by block.

The label is read onto the prediction grid (directly when the grids match, else a nearest-neighbour
WarpedVRT, as the training loader does), its codes are mapped to class indices, and a confusion
matrix is summed over the prediction's blocks, so memory stays bounded for any scene size. Label
nodata and unknown codes are skipped (a label of fractional values is refused: it holds no class
codes); labelled pixels the prediction left as nodata are counted and reported, not scored. A
prediction that is not a class map (geoseg's probabilities, several bands, floating-point values) is
refused before any pixel is read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from tqdm import tqdm

from geoseg.classes import ClassInfo
from geoseg.data.labels import ClassMap, check_classes, open_label_on_grid
from geoseg.data.raster_kind import class_map_of, is_probabilities, not_a_class_map
from geoseg.data.remote import shown
from geoseg.data.scenes import inspect_scene, open_raster, region_pixels
from geoseg.data.vector_labels import VectorOptions
from geoseg.engine.metrics import ConfusionMatrix, compute_metrics, majority_baseline
from geoseg.errors import GeosegError
from geoseg.inference.writer import read_classes_tag
from geoseg.io import atomic_write_text, json_safe

log = logging.getLogger(__name__)


def prediction_classes(prediction: str, override: list[dict] | None) -> ClassInfo:
    """The classes of ``classes=`` when given, else those the prediction file carries (once it is known
    to be a class map: geoseg's probabilities carry the list too)."""
    if override is not None:
        return ClassInfo.from_config(check_classes(override, "classes="))
    check_class_map(prediction)
    with open_raster(prediction, "prediction") as src:
        found = read_classes_tag(src)
    if found is None:
        raise GeosegError(
            f"prediction '{prediction}' has no geoseg class list; pass classes='[{{code: 0, name: a}}, ...]' "
            "in the order of the predicted indices"
        )
    return found


def check_class_map(prediction: str, in_set: bool = False) -> None:
    """Refuse a prediction that is not a class map (geoseg's probabilities, several bands, floats) in one
    line naming it and what to score instead (``in_set``: it is one file of a folder or glob)."""
    with open_raster(prediction, "prediction") as src:
        problem, probabilities = not_a_class_map(src, prediction), is_probabilities(src.tags())
    if problem is None:
        return
    beside = class_map_of(prediction) if probabilities else None
    if in_set:
        fix = "leave it out of prediction= (a set is scored from class maps only)"
    elif beside:
        fix = f"score '{beside}'"
    else:
        fix = "score the class map geoseg predict wrote (its output= file)"
    raise GeosegError(f"{problem}; {fix}")


MOST = 0.5  # above this share of the pixels, out-of-range predictions or unmapped labels are an error


@dataclass
class SceneCounts:
    """What scoring one scene sums: the confusion matrix (the last column holds out-of-range
    predictions) and the pixel counts behind the warnings. Counts of several scenes add up."""

    matrix: torch.Tensor
    labelled: int = 0
    unpredicted: int = 0
    unmapped: int = 0
    out_of_range: int = 0
    label_on_grid: bool = True
    fractional: int = 0  # label pixels holding a value that is no whole number (so no class code)

    def __add__(self, other: SceneCounts) -> SceneCounts:
        return SceneCounts(
            self.matrix + other.matrix, self.labelled + other.labelled, self.unpredicted + other.unpredicted,
            self.unmapped + other.unmapped, self.out_of_range + other.out_of_range,
            self.label_on_grid and other.label_on_grid, self.fractional + other.fractional,
        )  # fmt: skip


@dataclass(frozen=True)
class ScoreOptions:
    """How labels are read and which part of each scene is scored (the same for every scene of a set)."""

    label_nodata: float | None = None  # overrides the label file's nodata
    vector: VectorOptions | None = None  # how polygon labels burn
    region: Sequence[float] | None = None  # [left, top, right, bottom] fractions of the prediction's grid


def score(
    prediction: str,
    labels: str,
    classes: ClassInfo,
    label_nodata: float | None = None,
    progress: bool = False,
    vector: VectorOptions | None = None,
    region: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Metrics, the confusion matrix and pixel counts of ``prediction`` against ``labels``.

    A predicted value that is no class index (not the prediction's nodata) is scored as wrong for
    the label it covers, and counted; label codes that are no class (not the label nodata) are
    skipped and counted. Either one over most of the pixels is an error: the class list does not
    belong to these files. ``region`` ([left, top, right, bottom] fractions of the prediction's grid)
    scores only that part of the scene.
    """
    opts = ScoreOptions(label_nodata, vector, region)
    counts = count_scene(prediction, labels, classes, opts, progress)
    check_counts(prediction, labels, classes, counts)
    return summarize(counts, classes, prediction, labels, region)


def count_scene(
    prediction: str, labels: str, classes: ClassInfo, opts: ScoreOptions, progress: bool = False
) -> SceneCounts:
    """The confusion matrix and pixel counts of one scene (within ``region``), block by block."""
    check_class_map(prediction)
    num = len(classes.codes)
    ignore = 255 if num < 255 else num + 1
    class_map = ClassMap(classes.codes, ignore_index=ignore)
    scene = inspect_scene(prediction, labels, bands=[1], label_nodata=opts.label_nodata,
                          unknown_labels="ignore", vector=opts.vector, class_codes=classes.codes)  # fmt: skip
    matrix = ConfusionMatrix(num + 1, ignore_index=ignore)  # column ``num``: out-of-range predictions
    counts = SceneCounts(matrix.matrix, label_on_grid=scene.label_on_grid)
    src, reader = open_label_on_grid(scene, classes.codes)
    try:
        with open_raster(prediction, "prediction") as pred:
            windows = region_windows(pred, opts.region)
            for window in tqdm(windows, desc="evaluate", unit="block", disable=not progress, leave=False):
                predicted = pred.read(1, window=window).astype(np.int64)
                raw = reader.read(1, window=window)
                target = class_map(raw).astype(np.int64)
                nodata = _label_nodata(raw, scene.label_nodata)
                counts.unmapped += int(((target == ignore) & ~nodata).sum())
                counts.fractional += _fractional(raw, nodata)
                if pred.nodata is not None:
                    missing = predicted == pred.nodata
                    counts.unpredicted += int((missing & (target != ignore)).sum())
                    target = np.where(missing, ignore, target)
                bad = (predicted < 0) | (predicted >= num)
                counts.out_of_range += int((bad & (target != ignore)).sum())
                counts.labelled += int((target != ignore).sum())
                predicted = np.where(bad, num, predicted)
                matrix.update(torch.from_numpy(predicted), torch.from_numpy(target))
    finally:
        if reader is not src:
            reader.close()
        src.close()
    return counts


def region_windows(src: rasterio.DatasetReader, region: Sequence[float] | None) -> list[Window]:
    """The file's blocks, clipped to ``region`` (fractions of its grid) and without those outside it."""
    blocks = [w for _, w in src.block_windows(1)]
    rect = region_pixels(region, src.height, src.width, "region=")
    if rect is None:
        return blocks
    row0, col0, row1, col1 = rect
    clipped = []
    for w in blocks:
        top, left = max(w.row_off, row0), max(w.col_off, col0)
        bottom, right = min(w.row_off + w.height, row1), min(w.col_off + w.width, col1)
        if bottom > top and right > left:
            clipped.append(Window(left, top, right - left, bottom - top))
    return clipped


def summarize(counts: SceneCounts, classes: ClassInfo, prediction: str, labels: str,
              region: Sequence[float] | None = None) -> dict[str, Any]:  # fmt: skip
    """The metrics JSON of summed counts: metrics, confusion, classes and the pixel counts."""
    num = len(classes.codes)
    result = _metrics_without_invalid(counts.matrix, classes.names)
    result.update(baseline_fields(counts.matrix, classes.names))
    result.update({
        "prediction": prediction, "labels": labels, "label_on_grid": counts.label_on_grid,
        "region": None if region is None else [float(v) for v in region],
        "classes": classes.as_list(), "confusion": counts.matrix[:num, :num].tolist(),
        "unpredicted_labelled_pixels": counts.unpredicted, "out_of_range_predictions": counts.out_of_range,
        "unmapped_label_pixels": counts.unmapped,
    })  # fmt: skip
    return result


def baseline_fields(matrix: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """The scores of predicting the most frequent label class everywhere (training's
    ``majority_baseline_miou``), from the true pixel counts of ``matrix`` (its rows)."""
    truth = matrix.sum(1)[: len(names)]  # the last column (out-of-range predictions) counts as truth too
    baseline = majority_baseline(torch.diag(truth), names)  # any matrix with these row sums
    return {
        "majority_class": names[int(truth.argmax())] if int(truth.sum()) else None,
        "majority_baseline_miou": baseline["miou"],
        "majority_baseline_mf1": baseline["mf1"],
        "majority_baseline_accuracy": baseline["accuracy"],
    }


def _label_nodata(raw: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where the label is its nodata value (NaN counts for float labels)."""
    out = np.zeros(raw.shape, dtype=bool)
    if raw.dtype.kind == "f":
        out |= np.isnan(raw)
    if nodata is not None and nodata == nodata:
        out |= raw == nodata
    return out


def _fractional(raw: np.ndarray, nodata: np.ndarray) -> int:
    """Label pixels (not nodata) of a float label whose value is no whole number."""
    if raw.dtype.kind != "f":
        return 0
    return int((~nodata & np.isfinite(raw) & (raw != np.round(raw))).sum())


def check_counts(prediction: str, labels: str, classes: ClassInfo, counts: SceneCounts) -> None:
    """Fail when the labels are no class codes or most pixels cannot be scored; warn about the rest."""
    codes = classes.codes
    unmapped, labelled, out_of_range = counts.unmapped, counts.labelled, counts.out_of_range
    if counts.fractional:
        raise GeosegError(
            f"{counts.fractional} pixels of label '{labels}' hold fractional values, so it is not a raster "
            "of class codes (resampled with bilinear or cubic?); pass labels of whole class codes, resampled "
            "with nearest"
        )
    if unmapped and unmapped >= MOST * (unmapped + labelled):
        raise GeosegError(
            f"{unmapped} of {unmapped + labelled} label pixels of '{labels}' hold codes that are not in the "
            f"class list (codes {codes}); pass the training classes (classes=...) or the right labels"
        )
    if labelled == 0:
        raise GeosegError(
            f"no pixel of '{labels}' can be scored against '{prediction}' (every one is nodata or outside "
            "the class list or region=); check the files, label_nodata= and region="
        )
    if out_of_range and out_of_range >= MOST * labelled:
        raise GeosegError(
            f"{out_of_range} of {labelled} scored pixels of '{prediction}' hold values that are no class "
            f"index (0..{len(codes) - 1}); pass its class list with classes=... or check that it is a "
            "geoseg class map"
        )
    for count, what in (
        (unmapped, "label pixels hold codes outside the class list and were skipped"),
        (out_of_range, "predicted pixels hold no class index and were scored as wrong"),
    ):
        if count:
            log.warning("%s: %d %s", prediction, count, what)


def _metrics_without_invalid(matrix: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Metrics of the real classes: out-of-range predictions (the last column) count as errors only."""
    result = compute_metrics(matrix, [*names, "(no class)"])
    for key in ("iou", "f1"):
        result[key].pop("(no class)")
    for key, per_class in (("miou", "iou"), ("mf1", "f1")):
        present = [v for v in result[per_class].values() if not math.isnan(v)]
        result[key] = sum(present) / len(present) if present else math.nan
    return result


def format_table(result: dict[str, Any]) -> str:
    """Per-class IoU and F1, the macro means and accuracy, then the confusion matrix (rows = truth)."""
    names = [c["name"] for c in result["classes"]]
    width = max(8, *(len(n) for n in names))
    pixels = [sum(row) for row in result["confusion"]]

    def fmt(v: float) -> str:
        return "     -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.3f}"

    lines = [f"{'class':<{width}}  {'IoU':>6}  {'F1':>6}  {'pixels':>10}"]
    for name, n in zip(names, pixels, strict=True):
        lines.append(f"{name:<{width}}  {fmt(result['iou'][name])}  {fmt(result['f1'][name])}  {n:>10}")
    lines.append(f"{'mean':<{width}}  {fmt(result['miou'])}  {fmt(result['mf1'])}  {result['pixels']:>10}")
    lines.append(f"{'baseline':<{width}}  {fmt(result.get('majority_baseline_miou'))}  "
                 f"{fmt(result.get('majority_baseline_mf1'))}  {majority_note(result)}")  # fmt: skip
    lines.append(f"accuracy {fmt(result['accuracy']).strip()} (baseline "
                 f"{fmt(result.get('majority_baseline_accuracy')).strip()})")  # fmt: skip
    lines.append("confusion (rows: labels, columns: predictions)")
    cell = max(8, *(len(n) for n in names), *(len(str(v)) for row in result["confusion"] for v in row))
    lines.append(" " * width + "  " + " ".join(f"{n:>{cell}}" for n in names))
    lines += [
        f"{name:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row)
        for name, row in zip(names, result["confusion"], strict=True)
    ]
    return "\n".join(lines)


def majority_note(result: dict[str, Any]) -> str:
    """What the baseline row is: the majority label class predicted everywhere."""
    name = result.get("majority_class")
    return f"(the most frequent label class, {name}, everywhere)" if name else "(no labelled pixel)"


def write_metrics(path: str, result: dict[str, Any]) -> None:
    """The metrics JSON at ``path``; a remote prediction or label is named as :func:`shown` shows it (no
    signed URL's token in the file)."""
    atomic_write_text(path, json.dumps(json_safe(_shown_paths(result)), indent=2) + "\n", "metrics")


def _shown_paths(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` (and each of its scenes) with the prediction and label paths shown without secrets."""
    named = ("prediction", "labels")
    out = {k: shown(v) if k in named and isinstance(v, str) else v for k, v in result.items()}
    if isinstance(out.get("scenes"), list):
        out["scenes"] = [_shown_paths(s) if isinstance(s, dict) else s for s in out["scenes"]]
    return out
