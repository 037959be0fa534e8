"""Score a predicted class map against a label raster on the prediction's grid, block by block.

The label is read onto the prediction grid (directly when the grids match, else a nearest-neighbour
WarpedVRT, as the training loader does), its codes are mapped to class indices, and a confusion
matrix is summed over the prediction's blocks, so memory stays bounded for any scene size. Label
nodata and unknown codes are skipped; labelled pixels the prediction left as nodata are counted
and reported, not scored.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.scenes import inspect_scene, open_raster
from geoseg.data.vector_labels import VectorOptions
from geoseg.engine.log import json_safe
from geoseg.engine.metrics import ConfusionMatrix, compute_metrics
from geoseg.errors import GeosegError
from geoseg.inference.loaded import ClassInfo
from geoseg.inference.writer import read_classes_tag
from geoseg.io import atomic_write_text


def prediction_classes(prediction: str, override: list[dict] | None) -> ClassInfo:
    """The classes of ``classes=`` when given, else those the prediction file carries."""
    if override:
        return ClassInfo.from_config(override)
    with open_raster(prediction, "prediction") as src:
        found = read_classes_tag(src)
    if found is None:
        raise GeosegError(
            f"prediction '{prediction}' has no geoseg class list; pass classes='[{{code: 0, name: a}}, ...]' "
            "in the order of the predicted indices"
        )
    return found


def score(
    prediction: str,
    labels: str,
    classes: ClassInfo,
    label_nodata: float | None = None,
    progress: bool = False,
    vector: VectorOptions | None = None,
) -> dict[str, Any]:
    """Metrics, the confusion matrix and pixel counts of ``prediction`` against ``labels``."""
    num = len(classes.codes)
    ignore = 255 if num < 255 else num
    class_map = ClassMap(classes.codes, ignore_index=ignore)
    scene = inspect_scene(prediction, labels, bands=[1], label_nodata=label_nodata, unknown_labels="ignore",
                          vector=vector)  # fmt: skip
    matrix = ConfusionMatrix(num, ignore_index=ignore)
    unpredicted = 0
    src, reader = open_label_on_grid(scene, classes.codes)
    try:
        with open_raster(prediction, "prediction") as pred:
            windows = [w for _, w in pred.block_windows(1)]
            for window in tqdm(windows, desc="evaluate", unit="block", disable=not progress, leave=False):
                predicted = pred.read(1, window=window)
                target = class_map(reader.read(1, window=window))
                if pred.nodata is not None:
                    missing = predicted == pred.nodata
                    unpredicted += int((missing & (target != ignore)).sum())
                    target = np.where(missing, ignore, target)
                predicted = np.minimum(predicted, num - 1)  # out-of-range predictions only where ignored
                matrix.update(
                    torch.from_numpy(predicted.astype(np.int64)), torch.from_numpy(target.astype(np.int64))
                )
    finally:
        if reader is not src:
            reader.close()
        src.close()
    result = compute_metrics(matrix.matrix, classes.names)
    result.update({
        "prediction": prediction, "labels": labels, "label_on_grid": scene.label_on_grid,
        "classes": classes.as_list(), "confusion": matrix.matrix.tolist(),
        "unpredicted_labelled_pixels": unpredicted,
    })  # fmt: skip
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
    lines.append(f"accuracy {fmt(result['accuracy']).strip()}")
    lines.append("confusion (rows: labels, columns: predictions)")
    lines.append(" " * width + "  " + " ".join(f"{n[:8]:>8}" for n in names))
    lines += [
        f"{name:<{width}}  " + " ".join(f"{v:>8}" for v in row)
        for name, row in zip(names, result["confusion"], strict=True)
    ]
    return "\n".join(lines)


def write_metrics(path: str, result: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(json_safe(result), indent=2) + "\n")
