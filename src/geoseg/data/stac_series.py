"""STAC items as series: the items of one place (a tile code, or one footprint) are the dates of a scene,
dated by each item's ``datetime`` (``data.series.group``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from geoseg.data.band_files import FileEntry
from geoseg.data.series import GROUPS
from geoseg.data.stac import asset_href
from geoseg.errors import GeosegError

# item properties that name a fixed tile of a revisiting sensor, in order of preference
TILE_KEYS = (("grid:code",), ("s2:mgrs_tile",), ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square"),
             ("landsat:wrs_path", "landsat:wrs_row"))  # fmt: skip

Group = tuple[str, str, list[tuple[str, str, tuple[str, ...], str | None]]]  # (place, first item, dates)


def item_place(item: Mapping[str, Any], group: str) -> str:
    """The place an item shows: its tile code (``group=tile``) or its footprint (``footprint``)."""
    props = item.get("properties") or {}
    if group == "tile":
        for keys in TILE_KEYS:
            if all(props.get(k) not in (None, "") for k in keys):
                return "_".join(str(props[k]) for k in keys)
        raise GeosegError(
            f"STAC item '{item.get('id')}' names no tile ({', '.join(k[0] for k in TILE_KEYS)}); group its "
            "items by footprint with data.series.group=footprint."
        )
    bbox = item.get("bbox") or []
    if not bbox:
        raise GeosegError(f"STAC item '{item.get('id')}' has no bbox to group series by footprint.")
    return json.dumps([round(float(v), 4) for v in bbox])


def item_date(item: Mapping[str, Any]) -> str:
    """An item's acquisition time (``datetime``, else ``start_datetime``) as ISO text."""
    props = item.get("properties") or {}
    text = props.get("datetime") or props.get("start_datetime")
    if not text:
        raise GeosegError(f"STAC item '{item.get('id')}' has no datetime to order a series by.")
    return str(text)


def item_series(
    items: Sequence[Mapping[str, Any]], files: Sequence[FileEntry], group: str, mask_key: str | None
) -> list[Group]:
    """The items grouped into series, each date's asset hrefs in ``files`` order and its ``mask_key``
    asset (Sentinel-2's SCL); a place with two items of the same time keeps the first."""
    if group not in GROUPS:
        raise GeosegError(f"data.series.group={group!r} is not one of {', '.join(GROUPS)}.")
    places: dict[str, dict[str, Mapping[str, Any]]] = {}
    for item in items:
        places.setdefault(item_place(item, group), {}).setdefault(item_date(item), item)
    out = []
    for place, dated in sorted(places.items()):
        dates = []
        for when, item in sorted(dated.items()):
            hrefs = tuple(asset_href(item, e.name, f"data.files[{i}]") for i, e in enumerate(files))
            mask = asset_href(item, mask_key, "data.series.mask.file") if mask_key else None
            dates.append((when, when[:10], hrefs, mask))
        first = next(iter(sorted(dated.items())))[1]
        name = place if group == "tile" else str(first.get("id"))
        out.append((name, str(first.get("id")), dates))
    return out
