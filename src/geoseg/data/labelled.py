"""Whether a split has a labelled pixel: a label code listed in ``data.classes`` (not nodata, not
``ignore_index``, not an unmapped code). ``geoseg train`` refuses a train or val split without one at
start-up, as it has nothing to learn from or to validate on.

The answer comes from what start-up inspection already holds where it can: a scene without a label
file has no labelled pixel, and one whose label values (listed at inspection under
``data.unknown_labels=error``) hold no class code has none either. Where only a read can tell (values
not listed, a label on another grid, a split's region of a scene), the label is read once in the
scene's bounds, stopping at the first labelled strip, and the answer is cached in the scene index.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from rasterio.windows import Window

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.scene_index import SceneIndex, cached_array
from geoseg.data.scenes import Scene
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)

STRIP_ROWS = 256  # label rows read at a time
PURPOSE = {
    "train": "there is nothing to learn from",
    "val": "no epoch can be validated (no val mIoU, no best.pt)",
}


def known_labelled(scene: Scene, cmap: ClassMap) -> bool | None:
    """Whether ``scene`` has a labelled pixel, from inspection alone; None when only a read can tell."""
    if scene.label is None:
        return False
    if scene.label_values is None:
        return None
    codes = {float(c) for c in cmap.codes}
    if not any(float(v) in codes for v in scene.label_values):
        return False
    return True if scene.region is None and scene.label_on_grid else None


def any_labelled_pixel(scene: Scene, cmap: ClassMap) -> bool:
    """Whether a pixel of ``scene``'s label inside its bounds maps to a class (read strip by strip)."""
    if scene.label is None:
        return False
    row0, col0, row1, col1 = scene.bounds
    src, reader = open_label_on_grid(scene, cmap.codes.astype(int).tolist())
    try:
        for top in range(row0, row1, STRIP_ROWS):
            window = Window(col0, top, col1 - col0, min(STRIP_ROWS, row1 - top))
            if (cmap(reader.read(1, window=window)) != cmap.ignore_index).any():
                return True
        return False
    finally:
        if reader is not src:
            reader.close()
        src.close()


def cached_any_labelled(scene: Scene, cmap: ClassMap, index: SceneIndex | None) -> bool:
    """:func:`any_labelled_pixel`, from the scene index when it holds the answer for this class map."""

    def compute() -> np.ndarray:
        return np.array([any_labelled_pixel(scene, cmap)], dtype=np.uint8)

    name = f"labelled:{cmap.codes.astype(int).tolist()}"
    return bool(cached_array(index, scene.index_key, name, compute, np.uint8)[0])


def split_labelled(
    scenes: Sequence[Scene], cmap: ClassMap, index: SceneIndex | None, read: bool
) -> bool | None:
    """Whether some scene of a split has a labelled pixel; with ``read=False`` None when only reading
    a label could tell (the train split: its chip sampler counts every label's classes anyway)."""
    verdicts = [known_labelled(s, cmap) for s in scenes]
    if any(verdicts):
        return True
    unknown = [s for s, v in zip(scenes, verdicts, strict=True) if v is None]
    if not unknown:
        return False
    if not read:
        return None
    found = any(cached_any_labelled(s, cmap, index) for s in unknown)  # stops at the first labelled scene
    if index is not None:
        index.save()
    return found


def unlabelled_split_error(
    split: str, scenes: Sequence[Scene], cmap: ClassMap, manifest: str | None
) -> GeosegError:
    """The one line for a split without a labelled pixel: the split, the cause and the fix."""
    purpose = PURPOSE.get(split, f"the {split} split has nothing to score")
    labelled = [s for s in scenes if s.label is not None]
    if not labelled:
        return GeosegError(f"the {split} split has no label files: {no_label_source(split, manifest)}, so "
                           f"{purpose}; {no_label_fix(split, manifest)}")  # fmt: skip
    codes = cmap.codes.astype(int).tolist()
    example = labelled[0]
    option = "the label column of data.manifest" if manifest else f"data.splits.{split}.labels"
    if all(known_labelled(s, cmap) is False for s in labelled):  # the values listed at inspection
        values = sorted({float(x) for s in labelled for x in s.label_values or ()})
        nodata = "" if example.label_nodata is None else f" (label nodata {example.label_nodata:g})"
        held = f"hold only the values {shown_values(values)}{nodata}, none a data.classes code {codes}"
    else:
        held = (f"have no pixel{label_area(example, split)} whose code is in data.classes {codes} (all are "
                "nodata, ignore_index or unmapped codes)")  # fmt: skip
    checks = ["data.classes", "data.label_nodata", option]
    if example.region is not None:
        checks.append(f"data.splits.{split}.region")
    return GeosegError(
        f"the {split} split has no labelled pixel: its label files (e.g. '{example.label}') {held}, so "
        f"{purpose}; check {', '.join(checks[:-1])} and {checks[-1]}"
    )


def label_area(scene: Scene, split: str) -> str:
    """Where a split reads a scene's label: its region, the image's grid, or (empty) the whole file."""
    if scene.region is not None:
        return f" inside data.splits.{split}.region"
    return "" if scene.label_on_grid else " over the image"


def no_label_source(split: str, manifest: str | None) -> str:
    if manifest:
        return f"data.manifest '{manifest}' names no label for its '{split}' rows (no label column, or empty)"
    return f"data.splits.{split}.labels is null"


def no_label_fix(split: str, manifest: str | None) -> str:
    if manifest:
        return "add a label column with each image's label file"
    return f"set it to each image's label file, e.g. data.splits.{split}.labels='labels/{{stem}}.tif'"


def shown_values(values: Sequence[float], most: int = 8) -> str:
    """Label values as a short list (whole numbers without '.0')."""
    shown = [int(v) if math.isfinite(v) and v == int(v) else v for v in values[:most]]
    return f"{shown}{' ...' if len(values) > most else ''}"


def warn_unlabelled_scenes(split: str, scenes: Sequence[Scene]) -> None:
    """Warn when some (not all) scenes of a split have no label file: nothing of them is scored."""
    missing = [s.image for s in scenes if s.label is None]
    if missing and len(missing) < len(scenes):
        log.warning("%d of %d %s scenes have no label file (e.g. '%s'); none of their pixels is scored",
                    len(missing), len(scenes), split, missing[0])  # fmt: skip
