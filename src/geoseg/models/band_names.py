"""Band names compared across datasets and pretrained weights: ``B4`` is ``B04`` is ``red``.

Names are compared case-insensitively, with a Sentinel-2 band id's zero padding ignored (``B8A`` =
``b8a``, ``B1`` = ``B01``). A Sentinel-2 band id and its STAC common name (``B04`` and ``red``,
``B08`` and ``nir``, ``B8A`` and ``nir08``) are the same band, so ImageNet's ``red, green, blue`` find
``B04, B03, B02``. Band ids of other sensors mean other bands (Landsat 8's ``B5`` is its NIR): give
such data common names (``red``, ``nir``, ``swir16``) in its band descriptions to match them by meaning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Sentinel-2 MSI band id -> STAC eo common name (the names Earth Search and Planetary Computer use)
SENTINEL2_COMMON_NAMES = {
    "b01": "coastal", "b02": "blue", "b03": "green", "b04": "red", "b05": "rededge1", "b06": "rededge2",
    "b07": "rededge3", "b08": "nir", "b8a": "nir08", "b09": "nir09", "b10": "cirrus", "b11": "swir16",
    "b12": "swir22",
}  # fmt: skip
ALIASES = {"r": "red", "g": "green", "b": "blue", "swir1": "swir16", "swir2": "swir22", "pan": "pan"}
COMMON_NAMES = {*SENTINEL2_COMMON_NAMES.values(), "pan", "lwir11", "lwir12", "vv", "vh", "hh", "hv"}


def canonical_band(name: object) -> str | None:
    """The name a band is matched by (``"B4"`` -> ``"red"``, ``"B02_blue"`` -> ``"blue"``), or None
    for an unnamed band."""
    if name is None or isinstance(name, int | float):
        return None
    text = str(name).strip().lower()
    if not text:
        return None
    known = known_name(text)
    if known is not None:
        return known
    parts = [known_name(part) for part in re.split(r"[\s_\-:/.]+", text) if part]
    found = {part for part in parts if part is not None}
    return found.pop() if len(found) == 1 else text  # "B02_blue": both parts say blue


def known_name(text: str) -> str | None:
    """The common name of a Sentinel-2 band id or of a common name or alias, else None."""
    band_id = re.fullmatch(r"b0*(\d{1,2})(a?)", text)
    if band_id:
        number, suffix = band_id.groups()
        text = f"b{int(number):02d}" if not suffix else f"b{int(number)}a"
    if text in SENTINEL2_COMMON_NAMES:
        return SENTINEL2_COMMON_NAMES[text]
    if text in ALIASES:
        return ALIASES[text]
    return text if text in COMMON_NAMES else None


def match_bands(pretrained: Sequence[object], user: Sequence[object]) -> list[int | None]:
    """For each user band, the index of the pretrained band of the same name, or None."""
    index: dict[str, int] = {}
    for i, name in enumerate(pretrained):
        key = canonical_band(name)
        if key is not None:
            index.setdefault(key, i)
    return [index.get(key) if (key := canonical_band(name)) is not None else None for name in user]
