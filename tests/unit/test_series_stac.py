"""STAC items as series (``data.series.group``): the items of one tile are the dates of a scene, dated
by their ``datetime``, each date's bands and SCL mask from its assets (a static ItemCollection of local
files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import from_origin

from conftest import compose_config, tiny_run, write_tif
from geoseg.config import as_dict
from geoseg.data.build import load_scenes
from geoseg.errors import GeosegError

ORIGIN = from_origin(500_000, 5_000_000, 10, 10)
H = W = 64


def item(root: Path, tile: str | None, when: str, k: int) -> dict:
    """A Sentinel-2-like item of local files: B04 and B08 (float32) and an SCL with a cloud on date ``k``."""
    stem = f"{tile or 'x'}_{when[:10]}"
    assets = {}
    for band in ("B04", "B08"):
        path = root / f"{stem}_{band}.tif"
        write_tif(path, np.full((H, W), 100.0 * (k + 1), np.float32), ORIGIN)
        assets[band] = {"href": str(path), "type": "image/tiff; application=geotiff", "roles": ["data"]}
    scl = np.full((H, W), 4, np.uint8)
    scl[: 8 * (k + 1), :] = 9
    write_tif(root / f"{stem}_SCL.tif", scl, ORIGIN)
    assets["SCL"] = {"href": str(root / f"{stem}_SCL.tif"), "type": "image/tiff", "roles": ["data"]}
    props = {"datetime": when}
    if tile:
        props["grid:code"] = f"MGRS-{tile}"
    return {"type": "Feature", "stac_version": "1.0.0", "id": f"S2_{stem}", "properties": props,
            "geometry": {"type": "Point", "coordinates": [15.0, 46.0]}, "bbox": [14.9, 45.9, 15.1, 46.1],
            "assets": assets, "links": []}  # fmt: skip


def collection(root: Path, items: list[dict]) -> Path:
    path = root / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}), encoding="utf-8")
    return path


def stac_cfg(root: Path, source: Path, **series) -> dict:
    cfg = as_dict(compose_config("train", *tiny_run(root)).data)
    cfg.update(root=str(root), demo=None, files=["B04", "B08"], cache_dir=str(root / "cache"), chip_size=32)
    cfg["stac"] = {**cfg["stac"], "source": str(source)}
    split = {"images": None, "labels": "labels/{scene}.tif", "region": None}
    cfg["splits"] = {"train": dict(split), "val": dict(split)}
    mask = {**cfg["series"]["mask"], **series.pop("mask", {})}
    cfg["series"] = {**cfg["series"], "group": "tile", "mask": mask, **series}
    return cfg


def test_items_of_a_tile_are_the_dates_of_one_series_in_time_order(tmp_path):
    (tmp_path / "labels").mkdir()
    for tile in ("33TWM", "33TWN"):
        write_tif(tmp_path / "labels" / f"MGRS-{tile}.tif", np.zeros((H, W), np.uint8), ORIGIN)
    times = ["2024-07-20T10:00:00Z", "2024-06-05T10:00:00Z", "2024-08-14T10:00:00Z"]
    items = [item(tmp_path, "33TWM", t, k) for k, t in enumerate(times)]
    items += [item(tmp_path, "33TWN", t, k) for k, t in enumerate(times[:2])]
    cfg = stac_cfg(tmp_path, collection(tmp_path, items), mask={"file": "SCL", "invalid": [9]})
    scenes = load_scenes(cfg, "train", progress=False)
    assert [s.name for s in scenes] == ["MGRS-33TWM", "MGRS-33TWN"]
    assert [d.date for d in scenes[0].dates] == ["2024-06-05", "2024-07-20", "2024-08-14"]
    assert len(scenes[1].dates) == 2
    assert scenes[0].label.endswith("labels/MGRS-33TWM.tif")
    # each date's files and its SCL asset are that item's
    first = scenes[0].dates[0]
    assert first.files[0].path.endswith("33TWM_2024-06-05_B04.tif")
    assert first.mask is not None and first.mask.file.path.endswith("33TWM_2024-06-05_SCL.tif")
    # the SCL cloud (rows < 8 (k + 1), k = the item's index above) is invalid in that date only
    reader = scenes[0].date_readers()[0]  # 2024-06-05 is item 1: rows < 16 are cloud
    from rasterio.windows import Window

    out = np.empty((2, H, W), np.float32)
    invalid = reader.read(Window(0, 0, W, H), out)
    assert invalid is not None and invalid[:16].all() and not invalid[16:].any()


def test_items_without_a_tile_code_are_one_line_pointing_at_footprint(tmp_path):
    items = [item(tmp_path, None, "2024-06-05T10:00:00Z", 0)]
    cfg = stac_cfg(tmp_path, collection(tmp_path, items))
    cfg["splits"]["train"]["labels"] = None
    with pytest.raises(GeosegError, match=r"names no tile .*data\.series\.group=footprint") as info:
        load_scenes(cfg, "train", progress=False)
    assert "\n" not in str(info.value)
    cfg["series"]["group"] = "footprint"
    (scene,) = load_scenes(cfg, "train", progress=False)
    assert [d.date for d in scene.dates] == ["2024-06-05"]
