"""What kind of raster a file is, where a class map (or labels) is expected: geoseg's probabilities, a
multi-band or a floating-point raster are not class maps.

``geoseg predict`` tags what it writes (:data:`KIND_TAG`: ``class_map`` or ``probabilities``); the
probabilities it wrote before that tag are known by their ``scale`` tag, which every version wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import rasterio

KIND_TAG = "geoseg_raster"
CLASS_MAP = "class_map"
PROBABILITIES = "probabilities"
PROBABILITY_SCALE = "probability x 255"  # the ``scale`` tag of every geoseg probabilities raster


def is_probabilities(tags: Mapping[str, str]) -> bool:
    """Whether a raster's tags say it is a probabilities raster written by ``geoseg predict``."""
    return tags.get(KIND_TAG) == PROBABILITIES or tags.get("scale") == PROBABILITY_SCALE


def class_map_of(probabilities: str) -> str | None:
    """The class map ``geoseg predict`` wrote beside ``probabilities`` (``x_probs.tif`` -> ``x.tif``), if
    it is there."""
    path = re.sub(r"_probs(\.tiff?)$", r"\1", probabilities, flags=re.IGNORECASE)
    return path if path != probabilities and os.path.isfile(path) else None


def not_a_class_map(src: rasterio.DatasetReader, path: str) -> str | None:
    """Why the raster ``src`` (opened from ``path``) is not a class map, as a clause naming it, or None
    when it can be one (a single band of integers)."""
    if is_probabilities(src.tags()):
        return f"'{path}' is a probabilities raster written by geoseg predict, not a class map"
    if src.count > 1:
        return f"'{path}' has {src.count} bands, so it is not a class map (one band of class indices)"
    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        return f"'{path}' holds {src.dtypes[0]} values, so it is not a class map (integer class indices)"
    return None
