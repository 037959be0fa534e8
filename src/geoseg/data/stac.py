"""Scenes from STAC items: each item is one scene whose files are its assets named by ``data.files`` (by
key, else by the band name or common name an asset declares), with its label asset or a ``labels``
template (``{item}``, ``{collection}``); per-asset nodata and scaling from ``raster:bands``.

Where the items come from: :mod:`geoseg.data.stac_options` (``data.stac``) and
:mod:`geoseg.data.stac_search` (search, static catalogs, the frozen copy).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from geoseg.config import is_real
from geoseg.data.band_files import FileEntry
from geoseg.data.remote import is_url
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)

RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")

Scene = tuple[tuple[str, ...], str | None, str]  # (image hrefs in data.files order, label or None, item id)


def _bands(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """An asset's band descriptions: STAC 1.1 ``bands`` or the eo extension's ``eo:bands``."""
    bands = asset.get("bands") or asset.get("eo:bands") or []
    return [b for b in bands if isinstance(b, Mapping)] if isinstance(bands, list) else []


def _band_names(band: Mapping[str, Any]) -> set[str]:
    names = (band.get("name"), band.get("common_name"), band.get("eo:common_name"))
    return {n.casefold() for n in names if isinstance(n, str)}


def find_asset(item: Mapping[str, Any], name: str) -> str | None:
    """The key of the asset of ``item`` that ``name`` (a data.files entry) names: the key itself, else the
    one single-band asset whose band name or common name is ``name`` (``B04`` -> ``red``)."""
    assets = item.get("assets") or {}
    if name in assets:
        return name
    hits = [
        k
        for k, a in assets.items()
        if len(bands := _bands(a)) == 1 and name.casefold() in _band_names(bands[0])
    ]
    if len(hits) > 1:
        raise GeosegError(
            f"STAC item '{item.get('id')}': data.files '{name}' is the band name of assets {sorted(hits)}; "
            "list the asset key instead."
        )
    return hits[0] if hits else None


def raster_assets(item: Mapping[str, Any]) -> list[str]:
    """Keys of an item's raster assets (a GeoTIFF/JP2 media type, or the role data)."""
    assets = item.get("assets") or {}
    return [
        k for k, a in assets.items()
        if str(a.get("type") or "").startswith(RASTER_TYPES) or "data" in (a.get("roles") or [])
    ]  # fmt: skip


def asset_href(item: Mapping[str, Any], name: str, where: str) -> str:
    key = find_asset(item, name)
    if key is None:
        assets = item.get("assets") or {}
        inside = [k for k, a in assets.items() if any(name.casefold() in _band_names(b) for b in _bands(a))]
        hint = ""
        if inside:
            k = inside[0]
            index = next(i for i, b in enumerate(_bands(assets[k]), 1) if name.casefold() in _band_names(b))
            hint = f"; asset '{k}' holds it as band {index}: use {{name: {k}, bands: [{index}]}}"
        raise GeosegError(
            f"STAC item '{item.get('id')}' has no asset '{name}' ({where}); its assets are "
            f"{sorted(assets)}{hint}. List asset keys every item has, or leave the item out "
            "(data.stac.ids/query)."
        )
    href = item["assets"][key].get("href") if isinstance(item["assets"][key], Mapping) else None
    if not isinstance(href, str) or not href:
        raise GeosegError(f"STAC item '{item.get('id')}': asset '{key}' ({where}) has no href.")
    return href


def item_scenes(
    items: Sequence[Mapping[str, Any]],
    files: Sequence[FileEntry] | None,
    label_asset: str | None = None,
    labels: str | None = None,
    root: str = ".",
) -> list[Scene]:
    """Each item as (hrefs of the assets named by ``files`` in that order, its label or None, its id).

    The label is the ``label_asset`` asset's href, else ``labels`` formatted with ``{item}`` (the item id)
    and ``{collection}`` (a relative path is joined to ``root``, a URL is kept), else None.
    """
    if not files:
        keys = raster_assets(items[0]) if items else []
        first = items[0].get("id") if items else None
        raise GeosegError(
            "data.files must list the asset keys to stack from each STAC item, e.g. "
            f"data.files=[B04,B03,B02] "
            f"(item '{first}' has raster assets {keys})."
        )
    scenes = []
    for item in items:
        hrefs = tuple(asset_href(item, e.name, f"data.files[{i}]") for i, e in enumerate(files))
        label = None
        if label_asset is not None:
            if label_asset not in (item.get("assets") or {}):
                raise GeosegError(
                    f"STAC item '{item.get('id')}' has no asset '{label_asset}' (data.stac.label_asset); "
                    f"its assets are {sorted(item.get('assets') or {})}."
                )
            label = str(item["assets"][label_asset]["href"])
        elif labels is not None:
            try:
                label = labels.format(item=item.get("id"), collection=item.get("collection") or "")
            except (KeyError, IndexError, ValueError) as err:
                raise GeosegError(
                    f"label template '{labels}' uses {err}; for STAC items use {{item}} or {{collection}}."
                ) from None
            label = label if is_url(label) or os.path.isabs(label) else os.path.join(root, label)
        scenes.append((hrefs, label, str(item.get("id"))))
    return scenes


def _raster_bands(asset: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    bands = asset.get("raster:bands") or asset.get("bands") or []
    return [b for b in bands if isinstance(b, Mapping)] if isinstance(bands, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return float(value) if is_real(value) or (isinstance(value, float) and value != value) else None


def _declared(items: Sequence[Mapping[str, Any]], entry: FileEntry, read: Any) -> list[Any]:
    """``read(asset, bands)`` per item for the asset ``entry`` names (bands: those entry.bands picks)."""
    out = []
    for item in items:
        key = find_asset(item, entry.name)
        asset = (item.get("assets") or {}).get(key) if key else None
        if asset is None:
            out.append(None)
            continue
        bands = _raster_bands(asset)
        if entry.bands is not None:
            bands = [bands[i - 1] for i in entry.bands if i - 1 < len(bands)]
        out.append(read(asset, bands))
    return out


def _agreed(values: list[Any], entry: FileEntry, what: str) -> Any:
    """The one value every item declares, else None (with a warning when they disagree)."""
    distinct = {json.dumps(v) for v in values}  # nan-safe: json writes NaN
    if len(distinct) == 1:
        return values[0]
    shown = sorted(distinct)[:4]
    log.warning("STAC assets '%s' (data.files) declare different %s across items (%s); none is applied",
                entry.name, what, ", ".join(shown))  # fmt: skip
    return None


def asset_nodata(items: Sequence[Mapping[str, Any]], files: Sequence[FileEntry]) -> dict[str, float | None]:
    """Per ``files`` entry, the nodata its assets declare (``raster:bands``, STAC 1.1 ``bands`` or the
    asset's ``nodata``) when every item agrees; None when none declares one or they differ (warned)."""

    def read(asset: Mapping[str, Any], bands: list[Mapping[str, Any]]) -> float | None:
        values = {json.dumps(_number(b.get("nodata"))) for b in bands if "nodata" in b}
        if not values and "nodata" in asset:
            return _number(asset["nodata"])
        return json.loads(values.pop()) if len(values) == 1 else None

    out: dict[str, float | None] = {}
    for entry in files:
        out[entry.name] = _agreed(_declared(items, entry, read), entry, "nodata")
    return out


def asset_scaling(
    items: Sequence[Mapping[str, Any]], files: Sequence[FileEntry]
) -> dict[str, tuple[float, float] | None]:
    """Per ``files`` entry, the (scale, offset) its assets' raster bands declare when every item agrees
    (scale 1 and offset 0 fill in for a missing one); None when none declares them or they differ."""

    def read(asset: Mapping[str, Any], bands: list[Mapping[str, Any]]) -> list[float] | None:
        pairs = set()
        for band in bands:
            scale = band.get("scale", band.get("raster:scale"))
            offset = band.get("offset", band.get("raster:offset"))
            if scale is not None or offset is not None:
                pairs.add(
                    (
                        _number(scale) if scale is not None else 1.0,
                        _number(offset) if offset is not None else 0.0,
                    )
                )
        return list(pairs.pop()) if len(pairs) == 1 else None

    out: dict[str, tuple[float, float] | None] = {}
    for entry in files:
        value = _agreed(_declared(items, entry, read), entry, "scale/offset")
        out[entry.name] = None if value is None else (value[0], value[1])
    return out


def frozen_record(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What a run records of its items: id, collection, datetime and every asset's href."""
    out = []
    for item in items:
        props = item.get("properties") or {}
        assets = item.get("assets") or {}
        out.append({
            "id": item.get("id"), "collection": item.get("collection"),
            "datetime": props.get("datetime") or props.get("start_datetime"),
            "assets": {k: a.get("href") for k, a in assets.items() if isinstance(a, Mapping)},
        })  # fmt: skip
    return out
