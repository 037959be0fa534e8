"""Checks of a scene's label against ``data.classes`` and its image: nodata that is no class, values
that are classes, a label that overlaps its image, vector codes; and the fill for pixels outside it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from geoseg.data.rasters import unreadable
from geoseg.data.stack import Grid, overlaps
from geoseg.data.vector_labels import MissingField, VectorLabels, VectorOptions, declares_field, is_vector
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


def label_fill_value(dtype: str, label_nodata: float | None, codes: Sequence[int]) -> float:
    """A value for label pixels outside the label's extent: its nodata, or a dtype value that is no class."""
    if label_nodata is not None:
        return label_nodata
    if np.issubdtype(np.dtype(dtype), np.floating):
        return float("nan")
    info = np.iinfo(np.dtype(dtype))
    for candidate in (info.max, info.min):
        if candidate not in codes:
            return candidate
    raise GeosegError(f"set data.label_nodata: every {dtype} value is a class code")


def check_label_nodata(nodata: float | None, codes: Sequence[int], path: str, declared: bool) -> None:
    """Refuse a label nodata value that is also a class code: its pixels cannot be both (they would be
    trained and scored as that class, and the warp fills outside the label with it)."""
    if (
        not declared
        and nodata is not None
        and (isinstance(nodata, bool) or not isinstance(nodata, (int, float)))
    ):
        raise GeosegError(
            f"label nodata {nodata!r} (data.label_nodata; label_nodata= for geoseg evaluate) must be a "
            "number or null (the value the label file declares)."
        )
    if nodata is None or nodata != nodata or not codes or float(nodata) not in {float(c) for c in codes}:
        return
    where = f"the nodata value '{path}' declares" if declared else "data.label_nodata"
    raise GeosegError(
        f"label nodata {nodata:g} ({where}) is also a class code in data.classes; a pixel cannot be both: "
        "set the label nodata (data.label_nodata; label_nodata= for geoseg evaluate) to a value that is "
        "no class, or renumber that class."
    )


def check_label_values(
    src: rasterio.DatasetReader, codes: Sequence[int], label_nodata: float | None, path: str
) -> tuple[float, ...]:
    """The label's distinct values; fail when one is neither a class code nor the label nodata."""
    allowed = set(int(c) for c in codes)
    seen: set = set()
    try:
        for _, window in src.block_windows(1):
            seen.update(np.unique(src.read(1, window=window)).tolist())
    except RasterioError:
        raise unreadable("label", path) from None
    unknown = sorted(
        v for v in seen if not (v in allowed or (label_nodata is not None and v == label_nodata) or v != v)
    )
    if unknown:
        raise GeosegError(
            f"label '{path}' has values {unknown[:10]} that are not in data.classes "
            f"(codes {sorted(allowed)}); add them to data.classes, set data.label_nodata, "
            "or set data.unknown_labels=ignore."
        )
    return tuple(sorted(seen))


def check_label_overlap(grid: Grid, lab: rasterio.DatasetReader, image: str, label: str) -> None:
    """The label raster must overlap the image's grid (a wrong pairing or CRS otherwise trains on fill)."""
    if not overlaps(Grid.of(lab), grid):
        raise GeosegError(
            f"label '{label}' ({lab.crs}) does not overlap image '{image}' ({grid.rio_crs}); "
            "check that the label belongs to this image and that both CRSs are right."
        )


def label_coverage(label: Grid, image: Grid, region: tuple[int, int, int, int] | None = None) -> float:
    """The share of ``image``'s pixels (of its ``region`` (row0, col0, row1, col1), when given) inside
    ``label``'s footprint."""
    left, bottom, right, top = transform_bounds(label.rio_crs, image.rio_crs, *label.bounds)
    corners = [~image.affine * xy for xy in ((left, bottom), (left, top), (right, bottom), (right, top))]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    row0, col0, row1, col1 = region or (0, 0, image.height, image.width)
    height = max(0.0, min(max(rows), row1) - max(min(rows), row0))
    width = max(0.0, min(max(cols), col1) - max(min(cols), col0))
    return height * width / ((row1 - row0) * (col1 - col0))


def warn_partial_label(
    label: Grid, image: Grid, region: tuple[int, int, int, int] | None, label_path: str, image_path: str
) -> None:
    """Warn when the label raster covers only part of its image (of the split's region): the rest has
    no label and is ignored in training and scoring."""
    share = label_coverage(label, image, region)
    row0, col0, row1, col1 = region or (0, 0, image.height, image.width)
    missing = round((1 - share) * (row1 - row0) * (col1 - col0))
    if missing >= 1:
        part = "of the region of" if region else "of"
        log.warning("label '%s' covers %.4g%% %s image '%s': the other %.4g%% (%d px) has no label and "
                    "is ignored", label_path, 100 * share, part, image_path, 100 * (1 - share),
                    missing)  # fmt: skip


def check_vector_codes(
    features: VectorLabels, codes: Sequence[int], unknown_labels: str
) -> tuple[float, ...]:
    """The codes a vector label burns; fail on feature codes outside ``data.classes`` (unless ignored)."""
    allowed = {int(c) for c in codes}
    burned = sorted({int(v) for v in features.values})
    unknown = [c for c in burned if c not in allowed]
    if unknown and unknown_labels == "error" and codes:
        where = f"field '{features.options.field}'" if features.options.field else "data.vector.burn"
        raise GeosegError(
            f"vector label '{features.path}' has codes {unknown[:10]} ({where}) that are not in data.classes "
            f"(codes {sorted(allowed)}); add them to data.classes or set data.unknown_labels=ignore."
        )
    if codes and features.options.background not in allowed:
        log.warning("vector label '%s': data.vector.background=%d is not in data.classes, so pixels outside "
                    "every feature are ignored in training and scoring", features.path,
                    features.options.background)  # fmt: skip
    return tuple(float(c) for c in features.codes)


def missing_field_error(
    err: MissingField, labels: Sequence[str | None], options: VectorOptions
) -> GeosegError:
    """The advice for a label file without ``data.vector.field``, from the split's other ``labels``: when
    one of them has the field, add it to this file (``field=null`` would burn every file's features as
    one class); only when none has it, point to another field or to ``null``."""
    others = (p for p in dict.fromkeys(labels) if p and p != err.path and is_vector(p))
    having = next((p for p in others if declares_field(p, err.field, options.layer)), None)
    if having is not None:
        return GeosegError(
            f"vector label '{err.path}' has no field '{err.field}' (its fields: {err.fields}), but other "
            f"label files have it (e.g. '{having}'); add '{err.field}' to this file or drop its scene "
            "(data.vector.field=null would burn every feature of every file as one class)."
        )
    return GeosegError(
        f"no vector label has field '{err.field}' (e.g. '{err.path}', its fields: {err.fields}); set "
        "data.vector.field to the field that holds the class codes, or to null to burn "
        f"data.vector.burn={options.burn} in every feature (one class)."
    )
