"""Vector labels rasterised per chip, and predictions written back as polygons, on generated data."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from rasterio.features import rasterize
from rasterio.transform import from_origin
from rasterio.warp import transform_geom

from conftest import UTM, save_tiny_checkpoint, write_tif
from geoseg.classes import ClassInfo
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.scenes import inspect_scene
from geoseg.data.vector_labels import VectorOptions
from geoseg.data.windows import Chip
from geoseg.errors import GeosegError
from geoseg.inference.vectorize import write_polygons

ORIGIN = from_origin(500_000, 5_000_000, 10, 10)
H, W = 64, 80


def _polygons(n: int = 25, seed: int = 0) -> list[shapely.Geometry]:
    """Random triangles and boxes inside the grid, edges off the pixel centres by a quarter pixel."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        x, y = 500_000 + rng.uniform(0, W * 10), 5_000_000 - rng.uniform(0, H * 10)
        size = rng.uniform(20, 150)
        if k % 2:
            out.append(shapely.box(x, y, x + size, y + size * 0.7))
        else:
            out.append(shapely.Polygon([(x, y), (x + size, y + 2.5), (x + size / 3, y + size)]))
    return out


def _write_vector(path, geoms, crs="EPSG:32633", **fields) -> str:
    names = list(fields)
    wkb = shapely.to_wkb(np.array(geoms, dtype=object))
    data = [np.asarray(fields[k]) for k in names]
    pyogrio.raw.write(str(path), wkb, data, names, geometry_type="Polygon", crs=crs)
    return str(path)


def _image(tmp_path):
    return write_tif(tmp_path / "img.tif", np.ones((3, H, W), np.uint16) * 100, ORIGIN)


def _labels(tmp_path, label, codes, **vector):
    scene = inspect_scene(str(_image(tmp_path)), label, class_codes=codes, vector=VectorOptions(**vector))
    ds = ChipDataset([scene], 32, ClassMap(codes), fill=[0.0] * 3)
    return {(r, c): ds[Chip(0, r, c)]["mask"].numpy() for r, c in [(0, 0), (16, 40), (32, 48), (5, 9)]}


@pytest.mark.parametrize("all_touched", [False, True])
def test_chips_equal_rasterize_of_the_whole_grid(tmp_path, all_touched):
    geoms = _polygons()
    label = _write_vector(tmp_path / "lab.gpkg", geoms)
    whole = rasterize(((g, 1) for g in geoms), out_shape=(H, W), transform=ORIGIN, all_touched=all_touched,
                      dtype="uint8")  # fmt: skip
    assert 0 < whole.mean() < 0.9
    for (r, c), mask in _labels(tmp_path, label, [0, 1], all_touched=all_touched).items():
        np.testing.assert_array_equal(mask, whole[r : r + 32, c : c + 32])


def test_a_vector_in_another_crs_lands_on_the_pixels_of_its_reprojected_copy(tmp_path):
    geoms = _polygons(seed=1)
    utm = _write_vector(tmp_path / "utm.geojson", geoms)
    wgs = [shapely.geometry.shape(transform_geom(UTM, "EPSG:4326", g.__geo_interface__)) for g in geoms]
    lonlat = _write_vector(tmp_path / "wgs84.fgb", wgs, crs="EPSG:4326")
    a, b = _labels(tmp_path, utm, [0, 1]), _labels(tmp_path, lonlat, [0, 1])
    for key in a:
        assert (a[key] == b[key]).mean() > 0.995  # a pixel centre on a reprojected edge may flip
    assert sum(int(m.sum()) for m in a.values()) > 100


def test_a_field_with_gapped_codes_maps_through_the_classes(tmp_path):
    geoms = [
        shapely.box(500_000, 5_000_000 - 320, 500_400, 5_000_000),
        shapely.box(500_400, 4_999_680, 500_800, 5_000_000),
    ]
    label = _write_vector(tmp_path / "lc.shp", geoms, lc=np.array([8, 2], np.int32))
    masks = _labels(tmp_path, label, [0, 2, 8], field="lc")
    top_left = masks[(0, 0)]
    assert set(np.unique(top_left)) == {2}  # code 8 is index 2
    assert set(np.unique(masks[(16, 40)])) == {0, 1}  # code 2 above row 32, background below
    assert set(np.unique(masks[(32, 48)])) == {0}


def test_background_outside_the_classes_is_ignored(tmp_path, caplog):
    label = _write_vector(tmp_path / "b.gpkg", _polygons(5))
    masks = _labels(tmp_path, label, [1], background=255)
    assert set(np.unique(np.concatenate([m.ravel() for m in masks.values()]))) <= {0, 255}


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("garbage", r"cannot read vector label '.*lab.geojson' \(.*\); check that it is a complete"),
        ("no_crs", r"vector label '.*lab.shp' has no CRS; assign one"),
        ("far", r"vector label '.*lab.gpkg' does not overlap image '.*img.tif'"),
        ("field", r"vector label '.*lab.gpkg' has no field 'class' \(its fields: \['kind'\]\)"),
        ("codes", r"vector label '.*lab.gpkg' has codes \[7\] \(field 'kind'\) that are not in data.classes"),
        ("text", r"field 'kind' holds 'road', not a class code"),
        ("fraction", r"vector label '.*lab.gpkg': feature \d has kind=1.5, not a whole-number class code"),
    ],
)
def test_bad_vector_labels_are_one_line(tmp_path, case, message):
    geoms = _polygons(3)
    field = {"kind": np.array([1, 7, 1], np.int32)}
    if case == "garbage":
        label = tmp_path / "lab.geojson"
        label.write_text('{"type": "FeatureCollection", "features": [')
    elif case == "no_crs":
        label = _write_vector(tmp_path / "lab.shp", geoms, crs=None)
    elif case == "far":
        label = _write_vector(tmp_path / "lab.gpkg", [shapely.affinity.translate(g, 1e5) for g in geoms])
    elif case == "text":
        label = _write_vector(tmp_path / "lab.gpkg", geoms, kind=np.array(["road", "1", "2"], object))
    elif case == "fraction":  # its message showed numpy's repr, kind=np.float64(1.5)
        label = _write_vector(tmp_path / "lab.gpkg", geoms, kind=np.array([1.0, 1.5, 0.0]))
    else:
        label = _write_vector(tmp_path / "lab.gpkg", geoms, **field)
    field_name = "kind" if case in ("codes", "text", "fraction") else None
    vector = {"field": "class" if case == "field" else field_name}
    with pytest.raises(GeosegError, match=message) as err:
        inspect_scene(str(_image(tmp_path)), str(label), class_codes=[0, 1], vector=VectorOptions(**vector))
    assert "\n" not in str(err.value)


def test_points_lines_and_repairs_are_warned_about_once_at_start_up(tmp_path, caplog):
    """A line layer (road centre lines) labels only the pixels its lines touch: warned, not silent. The
    make_valid repair was logged twice, at the start-up check and again when the dataset opened it."""
    line = shapely.LineString([(500_050, 4_999_800), (500_700, 4_999_800)])
    bowtie = shapely.Polygon([(500_100, 4_999_700), (500_300, 4_999_900), (500_300, 4_999_700),
                              (500_100, 4_999_900)])  # fmt: skip
    pyogrio.raw.write(str(tmp_path / "lines.gpkg"), shapely.to_wkb(np.array([line], dtype=object)), [], [],
                      geometry_type="LineString", crs="EPSG:32633")  # fmt: skip
    for label, message in [
        (str(tmp_path / "lines.gpkg"), "1 of 1 features are points or lines (e.g. feature 1, a LineString)"),
        (_write_vector(tmp_path / "bowtie.gpkg", [bowtie]), "1 invalid geometry repaired with make_valid"),
    ]:
        caplog.clear()
        masks = _labels(tmp_path, label, [0, 1])
        assert any(m.any() for m in masks.values())
        assert [r.getMessage() for r in caplog.records if message in r.getMessage()] != []
        assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1, caplog.text
    caplog.clear()
    _labels(tmp_path, _write_vector(tmp_path / "boxes.gpkg", _polygons(4)), [0, 1])
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text


def test_one_labels_file_for_many_scenes_reads_only_the_features_near_each(tmp_path):
    from geoseg.data.labels import open_label_on_grid

    here = _polygons(10)
    elsewhere = [shapely.affinity.translate(g, 50_000, 0) for g in _polygons(30, seed=5)]
    label = _write_vector(tmp_path / "all.gpkg", here + elsewhere)
    scene = inspect_scene(str(_image(tmp_path)), label, class_codes=[0, 1], vector=VectorOptions())
    _, features = open_label_on_grid(scene, [0, 1])
    assert len(features.geoms) == 10 and features.info["features"] == 40


def test_no_feature_inside_the_scene_or_none_at_all_warns(tmp_path, caplog):
    ring = shapely.box(499_000, 4_998_000, 502_000, 5_001_000).difference(
        shapely.box(499_900, 4_999_000, 501_000, 5_000_100)
    )  # a frame around the scene: its bounds overlap the scene, the polygon does not
    around = _write_vector(tmp_path / "around.gpkg", [ring])
    empty = _write_vector(tmp_path / "empty.gpkg", [])
    for label, message in [(around, "no feature of vector label"), (empty, "has no features")]:
        caplog.clear()
        masks = _labels(tmp_path, label, [0, 1])
        assert all((m == 0).all() for m in masks.values())
        assert any(message in r.getMessage() for r in caplog.records)


def test_bad_vector_options_are_one_line():
    with pytest.raises(GeosegError, match=r"data.vector has unknown keys \['feild'\]"):
        VectorOptions.from_config({"feild": "x"})
    with pytest.raises(GeosegError, match=r"data\.vector\.burn must be a whole-number class code"):
        VectorOptions.from_config({"burn": "one"})


def _class_map(tmp_path, h=600, w=300, nodata_corner=True):
    """A class map with blobs of three classes, a bar crossing every strip, and a nodata corner."""
    rng = np.random.default_rng(4)
    arr = np.zeros((h, w), np.uint8)
    for _ in range(40):
        r, c, s = rng.integers(0, h - 40), rng.integers(0, w - 40), rng.integers(5, 40)
        arr[r : r + s, c : c + s] = rng.integers(1, 3)
    arr[:, 140:150] = 2  # one polygon from top to bottom, across three 256-row strips
    if nodata_corner:
        arr[:30, :30] = 255
    path = write_tif(tmp_path / "pred.tif", arr, ORIGIN, nodata=255)
    return path, arr


CLASSES = ClassInfo([10, 20, 30], ["bg", "field", "road"], [(0, 0, 0), (0, 255, 0), (90, 90, 90)])


def _rasterize_back(path: str) -> np.ndarray:
    _, _, wkb, (codes, names, index) = pyogrio.raw.read(path)
    geoms = shapely.from_wkb(wkb)
    return rasterize(zip(geoms, index, strict=True), out_shape=(600, 300), transform=ORIGIN, fill=255,
                     dtype="uint8"), geoms, codes, names  # fmt: skip


def test_polygons_re_rasterised_equal_the_class_map_and_cross_strips_whole(tmp_path):
    path, arr = _class_map(tmp_path)
    out = str(tmp_path / "pred.gpkg")
    n = write_polygons(str(path), out, CLASSES, rows=256)
    back, geoms, codes, names = _rasterize_back(out)
    np.testing.assert_array_equal(back, arr)  # exact, nodata included (never a polygon)
    assert n == len(geoms) and set(codes) <= {10, 20, 30} and set(names) <= {"bg", "field", "road"}
    assert pyogrio.read_info(out)["crs"] == "EPSG:32633"
    x = ORIGIN.c + 145 * 10  # the bar's centre line, at its top, across both strip edges, at its bottom
    points = [shapely.Point(x, ORIGIN.f - 10 * row) for row in (0.5, 255.5, 256.5, 512.5, 599.5)]
    holding = {i for i, g in enumerate(geoms) for p in points if g.contains(p)}
    assert len(holding) == 1  # the bar crossing two strip edges is one polygon
    assert all(g.is_valid for g in geoms)


def test_simplified_polygons_differ_only_along_edges_and_min_area_drops_small_ones(tmp_path):
    path, arr = _class_map(tmp_path)
    out = str(tmp_path / "simple.gpkg")
    write_polygons(str(path), out, CLASSES, simplify=10.0, rows=256)
    back, _, _, _ = _rasterize_back(out)
    diff = back != arr
    assert 0 < diff.mean() < 0.05
    padded = np.pad(arr, 1, mode="edge")
    edge = np.zeros_like(diff)
    for dr, dc in [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)]:
        edge |= padded[1 + dr : 601 + dr, 1 + dc : 301 + dc] != arr
    assert not (diff & ~edge).any()  # every changed pixel lies on a class boundary
    small = str(tmp_path / "big_only.gpkg")
    write_polygons(str(path), small, CLASSES, min_area=50 * 100.0, rows=256)
    _, geoms, _, _ = _rasterize_back(small)
    assert all(g.area >= 5000 for g in geoms)


def test_predict_vectorize_writes_a_gpkg_beside_the_class_map(tmp_path):
    from geoseg.inference.loaded import load_model
    from geoseg.inference.predict import PredictOptions, predict_scene, prepare

    rng = np.random.default_rng(0)
    img = rng.integers(200, 3000, size=(3, 96, 80), dtype=np.uint16)
    img[:, :20, :20] = 0
    image = write_tif(tmp_path / "s.tif", img, ORIGIN, nodata=0, tiled=True)
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", image)
    loaded = load_model(str(ckpt), torch.device("cpu"))
    opts = PredictOptions(tile=64, overlap=16, progress=False, vectorize=True, existing="overwrite")
    (job,) = prepare(loaded, [str(image)], [str(tmp_path / "out.tif")], opts)
    predict_scene(loaded, job, opts, torch.device("cpu"), None)
    with rasterio.open(tmp_path / "out.tif") as src:
        classes = src.read(1)
    _, _, wkb, (_, _, index) = pyogrio.raw.read(str(tmp_path / "out.gpkg"))
    pairs = zip(shapely.from_wkb(wkb), index, strict=True)
    back = rasterize(pairs, out_shape=classes.shape, transform=ORIGIN, fill=255, dtype="uint8")
    np.testing.assert_array_equal(back, classes)
    assert (back[:20, :20] == 255).all()


def test_evaluate_accepts_vector_labels(tmp_path):
    from geoseg.inference.scoring import score

    geoms = _polygons(seed=2)
    label = _write_vector(tmp_path / "lab.geojson", geoms)
    truth = rasterize(((g, 1) for g in geoms), out_shape=(H, W), transform=ORIGIN, dtype="uint8")
    pred = write_tif(tmp_path / "p.tif", truth, ORIGIN, nodata=255)
    result = score(str(pred), label, ClassInfo([0, 1], ["bg", "b"], [(0, 0, 0), (1, 1, 1)]),
                   vector=VectorOptions())  # fmt: skip
    assert result["miou"] == 1.0 and result["pixels"] == H * W
    with rasterio.open(pred) as src:  # the same file scored against a shifted copy is worse
        shifted = np.roll(src.read(1), 3, axis=1)
    worse = write_tif(tmp_path / "q.tif", shifted, ORIGIN, nodata=255)
    assert score(str(worse), label, ClassInfo([0, 1], ["bg", "b"], [(0, 0, 0), (1, 1, 1)]))["miou"] < 1.0
