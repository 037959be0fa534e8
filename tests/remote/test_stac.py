"""Scenes from STAC (data.stac): options, static catalogs, API searches through a real HTTP server, freezing.

No mocks: static sources are written with pystac, searches go through pystac-client to the STAC API in
``tests/servers/stac_api.py``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest

from conftest import free_port, write_tif
from geoseg.data.band_files import FileEntry
from geoseg.data.stac import asset_nodata, asset_scaling, frozen_record, item_scenes
from geoseg.data.stac_options import StacOptions
from geoseg.data.stac_search import item_matches, resolve_items
from geoseg.errors import GeosegError
from servers.stac_api import StacApiServer

BANDS = ("B02", "B03", "B04")
COMMON = {"B02": "blue", "B03": "green", "B04": "red"}
NEAR = [15.0, 45.0, 15.1, 45.1]  # inside the search box
FAR = [16.0, 46.0, 16.1, 46.1]
# id: (date, cloud cover, bbox)
SCENES = {
    "a": ("2024-06-10", 5, NEAR),
    "b": ("2024-07-15", 30, NEAR),  # too cloudy
    "c": ("2024-08-20", 10, FAR),  # outside the box
    "d": ("2024-09-05", 2, NEAR),  # after the interval
    "e": ("2024-06-20", 15, NEAR),
    "f": ("2024-07-01", 8, NEAR),
}
SEARCH = {
    "bbox": [14.9, 44.9, 15.2, 45.2],
    "datetime": "2024-06-01/2024-08-31",
    "query": ["eo:cloud_cover<20"],
}
EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
FILES = tuple(FileEntry(b) for b in BANDS)


def polygon(bbox: list[float]) -> dict:
    x0, y0, x1, y1 = bbox
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def make_item(folder: Path, item_id: str, keys=BANDS, nodata=0, collection="s2") -> pystac.Item:
    """An item whose assets ``keys`` are tiny GeoTIFFs of bands B02, B03, B04 written in ``folder/<id>``."""
    day, cloud, bbox = SCENES[item_id]
    when = datetime.fromisoformat(day).replace(hour=10, tzinfo=timezone.utc)
    item = pystac.Item(item_id, polygon(bbox), bbox, when, {"eo:cloud_cover": cloud}, collection=collection)
    item.stac_extensions = [EO, RASTER]
    (folder / item_id).mkdir(parents=True, exist_ok=True)
    for i, (key, band) in enumerate(zip(keys, BANDS, strict=True)):
        path = write_tif(folder / item_id / f"{band}.tif", np.full((8, 8), 100 + i, np.uint16), nodata=0)
        extra = {
            "raster:bands": [{"nodata": nodata, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}],
            "eo:bands": [{"name": band, "common_name": COMMON[band]}],
        }
        item.add_asset(key, pystac.Asset(str(path), media_type=pystac.MediaType.COG, roles=["data"],
                                         extra_fields=extra))  # fmt: skip
    label = write_tif(folder / item_id / "label.tif", np.zeros((8, 8), np.uint8))
    item.add_asset("label", pystac.Asset(str(label), media_type=pystac.MediaType.GEOTIFF, roles=["labels"]))
    item.add_asset("thumbnail", pystac.Asset(f"{folder}/{item_id}/thumb.png", media_type=pystac.MediaType.PNG,
                                             roles=["thumbnail"]))  # fmt: skip
    return item


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Folder ``s2/<id>/B0x.tif`` of every scene, written once."""
    root = tmp_path_factory.mktemp("stac")
    for item_id in SCENES:
        make_item(root / "s2", item_id)
    return root


@pytest.fixture
def api_items(scenes: Path) -> list[dict]:
    """The items as an API serves them (absolute local hrefs, a self link on the API)."""
    return [make_item(scenes / "s2", i).to_dict(include_self_link=False) for i in SCENES]


def options(**kw) -> StacOptions:
    return StacOptions.from_config(kw)


def ids(items: list[dict]) -> list[str]:
    return [i["id"] for i in items]


# --- options -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, "needs exactly one of api"),
        ({"api": "http://x", "source": "y.json"}, "got both"),
        ({"api": "ftp://x"}, "data.stac.api must be the http(s) URL"),
        ({"source": "s.json", "bbox": [1, 2]}, "data.stac.bbox must be [minx, miny, maxx, maxy]"),
        ({"source": "s.json", "bbox": [10, 5, 9, 6]}, "with min < max"),
        ({"source": "s.json", "bbox": [1, 2, 3, 4], "intersects": polygon(NEAR)}, "give one of them"),
        ({"source": "s.json", "datetime": "2024-13-01"}, "data.stac.datetime has '2024-13-01', not a date"),
        ({"source": "s.json", "datetime": "../.."}, "open at both ends"),
        ({"source": "s.json", "datetime": "2024-08-01/2024-06-01"}, "ends before it starts"),
        ({"source": "s.json", "query": ["eo:cloud_cover~20"]}, "data.stac.query[0] must be a condition"),
        ({"source": "s.json", "query": {"eo:cloud_cover": {"less": 20}}}, "operator 'less'"),
        ({"source": "s.json", "max_items": 0}, "data.stac.max_items must be a whole number >= 1"),
        ({"source": "s.json", "refresh": "yes"}, "data.stac.refresh must be true or false"),
        ({"source": "s.json", "collections": []}, "data.stac.collections must be a non-empty list"),
        ({"source": "s.json", "intersects": "nowhere.geojson"}, "data.stac.intersects file not found"),
        ({"source": "s.json", "intersects": {"type": "Polygon"}}, "is not a GeoJSON geometry"),
        (
            {"source": "s.json", "colections": ["s2"]},
            "unknown keys ['colections'] (did you mean collections?)",
        ),
    ],
)
def test_options_errors_are_one_line_naming_the_option(config: dict, expected: str) -> None:
    with pytest.raises(GeosegError) as err:
        StacOptions.from_config(config)
    message = str(err.value)
    assert expected in message
    assert message.startswith("data.stac") and "\n" not in message


def test_options_are_normalised_and_keyed_by_the_search() -> None:
    from omegaconf import OmegaConf

    query = ["eo:cloud_cover<20", "platform=sentinel-2a", "eo:cloud_cover>=1.5"]
    cfg = OmegaConf.create(
        {
            "api": "https://example.test/v1?key=secret",
            "collections": "s2",
            "datetime": "2024-06",
            "query": query,
        }
    )
    opts = StacOptions.from_config(cfg)
    assert opts.collections == ("s2",)
    assert opts.datetime == "2024-06-01T00:00:00Z/2024-06-30T23:59:59Z"
    assert opts.query == {"eo:cloud_cover": {"lt": 20, "gte": 1.5}, "platform": {"eq": "sentinel-2a"}}
    assert opts.max_items == 100 and opts.refresh is False and opts.label_asset is None
    assert opts.where == "https://example.test/v1?…"  # no key shown
    same = options(source="x.json", collections=["s1", "s2"], ids=["b", "a"])
    assert same.digest() == options(source="x.json", collections=["s2", "s1"], ids=["a", "b"]).digest()
    assert same.digest() == options(source="x.json", collections=["s1", "s2"], ids=["b", "a"], refresh=True,
                                    label_asset="label").digest()  # fmt: skip
    assert same.digest() != options(source="x.json", collections=["s1", "s2"], ids=["a"]).digest()
    assert options(source="x.json", datetime="2024-06-01T10:00:00Z").datetime == "2024-06-01T10:00:00Z"
    assert options(source="x.json", datetime="2024/..").datetime == "2024-01-01T00:00:00Z/.."


def test_intersects_file_is_unioned_and_reprojected(tmp_path: Path) -> None:
    import pyogrio
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform

    xs, ys = transform(CRS.from_epsg(4326), CRS.from_epsg(32633), [15.02, 15.06], [45.02, 45.06])
    boxes = [
        shapely.box(xs[0], ys[0], xs[0] + 500, ys[0] + 500),
        shapely.box(xs[1], ys[1], xs[1] + 500, ys[1] + 500),
    ]
    path = tmp_path / "aoi.gpkg"
    pyogrio.raw.write(str(path), shapely.to_wkb(boxes), field_data=[], fields=[], crs="EPSG:32633",
                      geometry_type="Polygon", driver="GPKG")  # fmt: skip
    opts = options(source="x.json", intersects=str(path))
    geom = shapely.geometry.shape(opts.intersects)
    assert geom.geom_type == "MultiPolygon"  # two apart: one union of two parts
    minx, miny, maxx, maxy = geom.bounds
    assert 15.0 < minx < maxx < 15.1 and 45.0 < miny < maxy < 45.1  # degrees, not metres
    relative = StacOptions.from_config({"source": "x.json", "intersects": "aoi.gpkg"}, root=tmp_path)
    assert relative.intersects == opts.intersects


# --- static sources ------------------------------------------------------------------------------------


def test_static_item_collection_with_relative_hrefs(scenes: Path, tmp_path: Path, caplog) -> None:
    items = [make_item(scenes / "s2", i) for i in SCENES]
    for item in items:
        for asset in item.assets.values():
            asset.href = os.path.relpath(asset.href, scenes)  # relative to the collection's file
    path = scenes / "items.json"
    pystac.ItemCollection(items).save_object(str(path))
    assert '"href": "s2/a/B02.tif"' in path.read_text()
    caplog.set_level(logging.INFO, logger="geoseg.data.stac_search")
    found, frozen = resolve_items(options(source=str(path), **SEARCH), tmp_path / "cache")
    assert ids(found) == ["a", "e", "f"]
    assert found[0]["assets"]["B02"]["href"] == str(scenes / "s2" / "a" / "B02.tif")
    assert Path(frozen).parent == tmp_path / "cache" and Path(frozen).name.startswith("stac-")
    assert json.loads(Path(frozen).read_text())["features"] == found
    assert f"searched 3 items from {path}" in caplog.text
    few, _ = resolve_items(options(source=str(path), max_items=2), tmp_path / "cache")
    assert ids(few) == ["a", "b"]  # sorted by id, then cut
    assert "6 items match" in caplog.text and "max_items=2" in caplog.text


def test_static_item_with_a_self_link(scenes: Path, tmp_path: Path) -> None:
    item = make_item(scenes / "s2", "a")
    item.set_self_href(str(scenes / "single" / "a.json"))
    item.make_asset_hrefs_relative()
    item.save_object(include_self_link=True)
    assert '"href": "../s2/a/B03.tif"' in (scenes / "single" / "a.json").read_text()
    found, _ = resolve_items(options(source=str(scenes / "single" / "a.json")), tmp_path)
    assert [a["href"] for a in found[0]["assets"].values()][:3] == [
        str(scenes / "s2" / "a" / f"{b}.tif") for b in BANDS
    ]


def write_catalog(folder: Path) -> Path:
    """A self-contained catalog -> collection -> items, asset keys blue/green/red, every href relative."""
    catalog = pystac.Catalog("cat", "test catalog")
    extent = pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
    )
    collection = pystac.Collection("s2", "s2", extent)
    catalog.add_child(collection)
    for i in SCENES:
        collection.add_item(make_item(folder / "s2", i, keys=("blue", "green", "red")))
    catalog.normalize_hrefs(str(folder))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def test_static_catalog_walked_with_relative_hrefs(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "cat")
    text = (tmp_path / "cat" / "s2" / "a" / "a.json").read_text()
    assert '"href": "./B04.tif"' in text and str(tmp_path) not in text
    found, _ = resolve_items(options(source=str(path), collections=["s2"], **SEARCH), tmp_path / "cache")
    assert ids(found) == ["a", "e", "f"]
    scenes = item_scenes(found, FILES)  # B02.. are eo:bands names of the assets blue, green, red
    assert scenes[0] == (tuple(str(tmp_path / "cat" / "s2" / "a" / f"{b}.tif") for b in BANDS), None, "a")
    assert all(os.path.exists(p) for paths, _, _ in scenes for p in paths)
    by_key = item_scenes(found, [FileEntry("red")])
    assert by_key[0][0] == (str(tmp_path / "cat" / "s2" / "a" / "B04.tif"),)


def test_static_catalog_over_http_resolves_against_urls(tmp_path: Path) -> None:
    write_catalog(tmp_path / "cat")
    with StacApiServer([], static_dir=tmp_path / "cat") as server:
        found, _ = resolve_items(options(source=f"{server.url}static/catalog.json", ids=["a"]), tmp_path)
        assert found[0]["assets"]["red"]["href"] == f"{server.url}static/s2/a/B04.tif"
        with pytest.raises(GeosegError) as err:
            resolve_items(options(source=f"{server.url}static/missing.json?sig=secret"), tmp_path)
    assert str(err.value).startswith(
        f"data.stac.source '{server.url}static/missing.json?…' could not be read (HTTP 404"
    )
    assert "secret" not in str(err.value)


def test_static_filters_by_area_and_relative_source_under_root(scenes: Path, tmp_path: Path) -> None:
    pystac.ItemCollection([make_item(scenes / "s2", i) for i in SCENES]).save_object(str(scenes / "all.json"))
    area = polygon([15.05, 45.05, 16.05, 46.05])  # touches NEAR and FAR
    opts = StacOptions.from_config({"source": "all.json", "intersects": area, "ids": ["a", "c"]}, root=scenes)
    assert opts.source == str(scenes / "all.json")
    found, _ = resolve_items(opts, tmp_path)
    assert ids(found) == ["a", "c"]
    away = options(source=str(scenes / "all.json"), intersects=polygon([0, 0, 1, 1]))
    with pytest.raises(GeosegError, match=r"no STAC items found .*intersects=<Polygon>"):
        resolve_items(away, tmp_path)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ({"query": ["platform=sentinel-2a"]}, True),
        ({"query": ["platform!=sentinel-2a"]}, False),
        ({"query": ["platform>sentinel-2"]}, True),  # strings compare as strings
        ({"query": ["eo:cloud_cover<=12.5", "eo:cloud_cover>12"]}, True),
        ({"query": ["eo:cloud_cover<sentinel"]}, False),  # a number is never below a string
        ({"query": ["gsd=10"]}, False),  # an absent property matches nothing
        ({"query": {"platform": {"in": ["sentinel-2b", "sentinel-2a"]}}}, True),
        ({"datetime": "2024-06-30/2024-07-01"}, True),  # overlaps start..end
        ({"datetime": "2024-07-02/.."}, False),
        ({"datetime": "../2024-06-01"}, True),
        ({"datetime": "../2024-05-31"}, False),
        ({"bbox": [15.05, 45.05, 16, 46]}, True),
        ({"collections": ["landsat"]}, False),
    ],
)
def test_static_filters_as_an_api_would(search: dict, expected: bool) -> None:
    june = {"start_datetime": "2024-06-01T00:00:00Z", "end_datetime": "2024-06-30T12:00:00Z"}
    props = {"datetime": None, **june, "eo:cloud_cover": 12.5, "platform": "sentinel-2a"}
    item = {"id": "x", "collection": "s2", "bbox": NEAR, "geometry": polygon(NEAR), "properties": props}
    assert item_matches(item, options(source="x.json", **search)) is expected


def test_static_source_errors(tmp_path: Path) -> None:
    with pytest.raises(GeosegError, match=r"data.stac.source not found: '.*nothing.json'"):
        resolve_items(options(source=str(tmp_path / "nothing.json")), tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(GeosegError, match=r"could not be read \(the response is not JSON\)"):
        resolve_items(options(source=str(tmp_path / "broken.json")), tmp_path)
    (tmp_path / "other.json").write_text('{"type": "Topology"}')
    with pytest.raises(GeosegError, match=r"is not a STAC Item, ItemCollection, Catalog or Collection"):
        resolve_items(options(source=str(tmp_path / "other.json")), tmp_path)
    pystac.Catalog("empty", "no items").save_object(dest_href=str(tmp_path / "empty.json"))
    with pytest.raises(GeosegError, match=r"holds no items; for a STAC API .* set data.stac.api"):
        resolve_items(options(source=str(tmp_path / "empty.json")), tmp_path)
    path = write_catalog(tmp_path / "cat")
    (tmp_path / "cat" / "s2" / "e" / "e.json").unlink()
    with pytest.raises(GeosegError) as err:
        resolve_items(options(source=str(path)), tmp_path)
    assert str(err.value).startswith(
        f"data.stac.source: STAC file '{tmp_path}/cat/s2/e/e.json' could not be read (file not found)"
    )


def test_zero_items_names_the_search(scenes: Path, tmp_path: Path) -> None:
    path = scenes / "zero.json"
    pystac.ItemCollection([make_item(scenes / "s2", "a")]).save_object(str(path))
    with pytest.raises(GeosegError) as err:
        resolve_items(options(source=str(path), datetime="2020", collections="s2"), tmp_path)
    message = str(err.value)
    assert message.startswith(
        f"data.stac: no STAC items found in '{path}' (collections=['s2'], datetime=2020"
    )
    assert "widen data.stac.bbox/datetime/query" in message and "\n" not in message
    assert not list(tmp_path.glob("stac-*.json"))  # nothing frozen


# --- STAC API ------------------------------------------------------------------------------------------


def test_api_search_pages_and_filters(api_items: list[dict], tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="geoseg.data.stac_search")
    with StacApiServer(api_items, page_size=2) as server:
        found, _ = resolve_items(options(api=server.url, collections=["s2"], **SEARCH), tmp_path)
        assert ids(found) == ["a", "e", "f"]
        assert server.paths.count("POST /search") == 2  # two pages of two
        assert f"searched 3 items from {server.url}" in caplog.text and "more than" not in caplog.text
        capped, _ = resolve_items(options(api=server.url, max_items=2, **SEARCH), tmp_path)
        assert len(capped) == 2 and "more than data.stac.max_items=2 items match" in caplog.text
        nothing = options(api=server.url, collections=["landsat"], **SEARCH)
        with pytest.raises(
            GeosegError, match=r"data.stac: no STAC items found in .*collections=\['landsat'\]"
        ):
            resolve_items(nothing, tmp_path)
    assert found[0]["assets"]["B04"]["href"] == api_items[0]["assets"]["B04"]["href"]
    record = frozen_record(found)[0]
    assert (record["id"], record["collection"], record["datetime"]) == ("a", "s2", "2024-06-10T10:00:00Z")
    assert record["assets"]["label"].endswith("a/label.tif")


def test_api_with_get_search_only_and_no_query_extension(
    api_items: list[dict], tmp_path: Path, caplog
) -> None:
    conforms = [c for c in StacApiServer([]).conforms_to if not c.endswith("#query")]
    with StacApiServer(api_items, page_size=2, conforms_to=conforms, search_methods=["GET"]) as server:
        found, _ = resolve_items(options(api=server.url, **SEARCH), tmp_path)
        assert server.paths.count("GET /search") == 2 and "POST /search" not in server.paths
    assert ids(found) == ["a", "e", "f"]
    assert f"data.stac.api '{server.url}': Server does not conform to QUERY" in caplog.text


def test_api_relative_hrefs_resolve_against_the_self_link(api_items: list[dict], tmp_path: Path) -> None:
    item = copy.deepcopy(api_items[0])
    item["assets"]["B02"]["href"] = "./B02.tif"
    with StacApiServer([item]) as server:
        found, _ = resolve_items(options(api=server.url), tmp_path)
        assert found[0]["assets"]["B02"]["href"] == f"{server.url}B02.tif"  # no self link: the search's URL
        server.items[0]["links"] = [{"rel": "self", "href": f"{server.url}collections/s2/items/a"}]
        found, _ = resolve_items(options(api=server.url, refresh=True), tmp_path)
    assert found[0]["assets"]["B02"]["href"] == f"{server.url}collections/s2/items/B02.tif"


def test_frozen_search_is_reused_offline_until_refresh(api_items: list[dict], tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="geoseg.data.stac_search")
    with StacApiServer(api_items) as server:
        opts = options(api=server.url, **SEARCH)
        first, frozen = resolve_items(opts, tmp_path)
        asked = server.requests
        again, same = resolve_items(opts, tmp_path)
        assert server.requests == asked and same == frozen and again == first
        assert f"reused 3 frozen items from {frozen}; data.stac.refresh=true searches again" in caplog.text
        server.items = server.items[:1]  # the catalog changes: a frozen run does not see it
        assert ids(resolve_items(opts, tmp_path)[0]) == ["a", "e", "f"]
        refreshed, _ = resolve_items(options(api=server.url, refresh=True, **SEARCH), tmp_path)
        assert server.requests > asked and ids(refreshed) == ["a"]
    offline, _ = resolve_items(opts, tmp_path)  # the server is gone
    assert ids(offline) == ["a"]


def test_unreachable_api_is_one_line_with_the_url(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)  # what a run logs
    port = free_port()
    start = time.monotonic()
    with pytest.raises(GeosegError) as err:
        resolve_items(options(api=f"http://user:secret@127.0.0.1:{port}/v1?token=abc"), tmp_path)
    message = str(err.value)
    assert message.startswith(f"data.stac.api: STAC API 'http://127.0.0.1:{port}/v1?…' could not be read")
    assert "(connection refused)" in message and "\n" not in message
    assert "secret" not in message and "abc" not in message
    assert "token=abc" not in caplog.text and "Retrying" not in caplog.text  # urllib3's retry warnings
    assert time.monotonic() - start < 10


def test_api_that_is_no_stac_api(api_items: list[dict], tmp_path: Path) -> None:
    with StacApiServer(api_items) as server:
        cases = {
            f"{server.url}nope/": "(HTTP 404: no such path /nope/)",
            f"{server.url}not-json": "(the response is not JSON)",
            f"{server.url}conformance": "(the JSON is not a STAC catalog, collection or item)",
        }
        for url, cause in cases.items():
            with pytest.raises(GeosegError) as err:
                resolve_items(options(api=url), tmp_path)
            assert cause in str(err.value) and url in str(err.value)
    core_only = StacApiServer(api_items, conforms_to=["https://api.stacspec.org/v1.0.0/core"])
    with (
        core_only as server,
        pytest.raises(GeosegError, match=r"not a STAC API with item search .* data.stac.source"),
    ):
        resolve_items(options(api=server.url), tmp_path)


# --- items -> scenes -----------------------------------------------------------------------------------


def test_assets_by_key_band_name_and_common_name(api_items: list[dict]) -> None:
    by_key = item_scenes(api_items[:1], FILES)
    assert by_key == [(tuple(api_items[0]["assets"][b]["href"] for b in BANDS), None, "a")]
    by_common = item_scenes(api_items[:1], [FileEntry("red"), FileEntry("blue")])
    assert by_common[0][0] == (api_items[0]["assets"]["B04"]["href"], api_items[0]["assets"]["B02"]["href"])


def test_missing_asset_names_item_and_keys(api_items: list[dict]) -> None:
    with pytest.raises(GeosegError) as err:
        item_scenes(api_items, [FileEntry("B02"), FileEntry("B08")])
    assert str(err.value).startswith("STAC item 'a' has no asset 'B08' (data.files[1]); its assets are "
                                     "['B02', 'B03', 'B04', 'label', 'thumbnail']")  # fmt: skip
    visual = copy.deepcopy(api_items[0])
    visual["assets"] = {"visual": {"href": "v.tif", "eo:bands": [{"name": n} for n in BANDS]}}
    with pytest.raises(
        GeosegError, match=r"asset 'visual' holds it as band 3: use \{name: visual, bands: \[3\]\}"
    ):
        item_scenes([visual], [FileEntry("B04")])
    with pytest.raises(GeosegError) as err:
        item_scenes(api_items, None)
    assert "data.files must list the asset keys" in str(err.value)
    assert "item 'a' has raster assets ['B02', 'B03', 'B04', 'label']" in str(err.value)  # no thumbnail


def test_labels_from_an_asset_or_a_template(api_items: list[dict]) -> None:
    scenes = item_scenes(api_items[:2], FILES, label_asset="label")
    assert [s[1] for s in scenes] == [
        api_items[0]["assets"]["label"]["href"],
        api_items[1]["assets"]["label"]["href"],
    ]
    templated = item_scenes(api_items[:1], FILES, labels="labels/{collection}/{item}.gpkg", root="/data")
    assert templated[0][1] == "/data/labels/s2/a.gpkg"
    remote = item_scenes(api_items[:1], FILES, labels="s3://bucket/{item}.tif", root="/data")
    assert remote[0][1] == "s3://bucket/a.tif"
    with pytest.raises(
        GeosegError, match=r"label template '\{scene\}.tif' uses 'scene'; .* \{item\} or \{collection\}"
    ):
        item_scenes(api_items[:1], FILES, labels="{scene}.tif")
    with pytest.raises(GeosegError, match=r"STAC item 'a' has no asset 'mask' \(data.stac.label_asset\)"):
        item_scenes(api_items[:1], FILES, label_asset="mask")


def test_asset_nodata_and_scaling_when_items_agree(api_items: list[dict], caplog) -> None:
    assert asset_nodata(api_items, FILES) == {"B02": 0.0, "B03": 0.0, "B04": 0.0}
    assert asset_scaling(api_items, FILES)["B03"] == (0.0001, -0.1)
    odd = copy.deepcopy(api_items)
    odd[2]["assets"]["B03"]["raster:bands"][0]["nodata"] = 65535
    odd[1]["assets"]["B04"]["raster:bands"][0]["nodata"] = "nan"
    assert asset_nodata(odd, FILES) == {"B02": 0.0, "B03": None, "B04": None}
    assert "STAC assets 'B03' (data.files) declare different nodata across items" in caplog.text
    assert "STAC assets 'B04'" in caplog.text
    for item in odd:
        for asset in item["assets"].values():
            asset.pop("raster:bands", None)
    assert asset_nodata(odd, FILES) == {"B02": None, "B03": None, "B04": None}
    assert asset_scaling(odd, FILES) == {"B02": None, "B03": None, "B04": None}
