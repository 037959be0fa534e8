"""Wrong refusals and silence (issue 35, classes 4 and 6): inputs geoseg refused though they are valid,
advice that would have done harm, and inputs it took without the word the README promises."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.transform import from_origin
from test_bad_inputs import make_root

from conftest import run_cli, save_tiny_checkpoint, tiny_train_cfg, write_tif
from geoseg.data.build import load_scenes
from geoseg.data.rasters import open_raster
from geoseg.data.scenes import inspect_scene
from geoseg.data.vector_labels import VectorOptions
from geoseg.engine.run import build_data
from geoseg.engine.state import DistInfo
from geoseg.errors import GeosegError
from geoseg.inference.inputs import find_inputs

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)

ORIGIN = from_origin(500_000, 5_000_000, 10, 10)  # conftest.write_tif's default grid, 10 m pixels
UTM = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}


def run_logged(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``geoseg ARGS`` in-process: (exit status, its stdout and stderr together, where Hydra logs)."""
    code, out, err = run_cli(capsys, *args)
    return code, out + err


def geojson(path: Path, features: list[tuple[dict | None, dict]]) -> Path:
    """A GeoJSON FeatureCollection in UTM 33N of (geometry or None, properties) pairs."""
    items = [{"type": "Feature", "geometry": g, "properties": p} for g, p in features]
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": UTM, "features": items}))
    return path


def square(col: int, row: int, size: int = 10) -> dict:
    """A square of ``size`` px with its top-left corner at pixel (``col``, ``row``) of ORIGIN's grid."""
    x, y = ORIGIN * (col, row)
    return shapely.geometry.mapping(shapely.box(x, y - 10 * size, x + 10 * size, y))


def vector_tiles(root: Path, labels: dict[str, list[tuple[dict | None, dict]]]) -> dict:
    """Tiles ``train/images/<name>.tif`` with polygon labels ``train/labels/<name>.geojson``; the data
    config that reads them with ``data.vector.field=cls``."""
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir()
    for name, features in labels.items():
        write_tif(root / "train" / "images" / f"{name}.tif", np.full((3, 64, 64), 7, np.uint16))
        geojson(root / "train" / "labels" / f"{name}.geojson", features)
    return {
        "root": str(root), "splits": {"train": {"images": "train/images/*.tif",
                                                "labels": "train/labels/{stem}.geojson"}},
        "classes": [{"code": c, "name": f"c{c}"} for c in range(3)], "vector": {"field": "cls"},
        "ignore_index": 255, "chip_size": 32, "max_nodata_fraction": 0.5, "batch_size": 2,
        "num_workers": 0, "index": False,
    }  # fmt: skip


# --- A: wrong refusals and harmful advice -----------------------------------------------------------------


def test_an_empty_geojson_tile_with_a_field_trains_with_a_warning(tmp_path, caplog):
    """A FeatureCollection without features has no fields to read: it was refused as lacking the field."""
    cfg = vector_tiles(tmp_path, {"a": [(square(4, 4), {"cls": 2})], "b": []})
    with caplog.at_level(logging.WARNING):
        scenes = load_scenes(cfg, "train", progress=False)
    assert [Path(s.label).name for s in scenes] == ["a.geojson", "b.geojson"]
    assert "b.geojson' has no features: every pixel of" in caplog.text


def test_a_tile_without_the_field_is_never_told_field_null_while_others_have_it(tmp_path):
    """field=null would burn every other tile's polygons as code 1; say so, and add the field instead."""
    cfg = vector_tiles(
        tmp_path / "some", {"a": [(square(4, 4), {"cls": 2})], "b": [(square(9, 9), {"kind": 1})]}
    )
    with pytest.raises(GeosegError) as err:
        load_scenes(cfg, "train", progress=False)
    message = str(err.value)
    labels = tmp_path / "some" / "train" / "labels"
    assert message.startswith(
        f"vector label '{labels}/b.geojson' has no field 'cls' (its fields: ['kind']), but other label files "
        f"have it (e.g. '{labels}/a.geojson'); add 'cls' to this file"
    ), message
    assert "or to null" not in message
    cfg = vector_tiles(
        tmp_path / "none", {"a": [(square(4, 4), {"kind": 2})], "b": [(square(9, 9), {"kind": 1})]}
    )
    with pytest.raises(GeosegError, match=r"no vector label has field 'cls' \(e.g. '.*a.geojson', its "
                       r"fields: \['kind'\]\); set data.vector.field to the field that holds the class "
                       r"codes, or to null to burn data.vector.burn=1 in every feature"):  # fmt: skip
        load_scenes(cfg, "train", progress=False)


def init_data(capsys, monkeypatch, tmp_path: Path, root: Path, *args: str) -> tuple[int, str, str]:
    """``geoseg init-data ROOT conf=<tmp>/conf`` (its scene index in tmp_path): (status, config text, log)."""
    monkeypatch.chdir(tmp_path)  # check_loads caches the scene index under ./outputs
    code, log = run_logged(
        capsys, "init-data", str(root), f"conf={tmp_path / 'conf'}", "overwrite=true", *args
    )
    path = tmp_path / "conf" / "data" / f"{root.name}.yaml"
    return code, path.read_text() if path.exists() else "", log


@pytest.mark.parametrize("images", [None, "**/images/*.tif"])
def test_init_data_keeps_the_demo_layouts_train_and_val_folders(
    demo_root, tmp_path, capsys, monkeypatch, images
):
    """train/{images,labels} + val/{images,labels}: it said "images and labels share a folder", or with
    images= wrote labels: null and "checked: it loads" (val_fraction=0.25: a 32-px strip of 128-px scenes)."""
    picked = [f"images='{images}'"] if images else []
    code, text, log = init_data(capsys, monkeypatch, tmp_path, demo_root, "val_fraction=0.25", *picked)
    assert code == 0, log
    assert 'train: {images: "train/images/*.tif", labels: "train/labels/{stem}.tif", region: null}' in text
    assert 'val: {images: "val/images/*.tif", labels: "val/labels/{stem}.tif", region: null}' in text
    assert "- {code: 0, name: class_0}" in text and "- {code: 3, name: class_3}" in text
    assert "checked: it loads (4 train and 2 val scenes inspected)" in log


def test_init_data_pairs_a_labels_folder_beside_each_images_folder(tmp_path, capsys, monkeypatch):
    root = tmp_path / "regions"
    for region in ("north", "south"):
        for kind, data in (
            ("images", np.full((3, 160, 160), 9, np.uint16)),
            ("labels", np.ones((160, 160), np.uint8)),
        ):
            (root / region / kind).mkdir(parents=True)
            write_tif(root / region / kind / f"tile_{region}.tif", data)
    code, text, log = init_data(capsys, monkeypatch, tmp_path, root)
    assert code == 0, log
    assert (
        'train: {images: "**/images/*.tif", labels: "{parent}/../labels/{stem}.tif", region: [0, 0, 0.8, 1]}'
        in text
    )
    assert "checked: it loads (2 train and 2 val scenes inspected)" in log


def test_init_data_without_labels_says_so_and_what_to_pass(tmp_path, capsys, monkeypatch):
    root = tmp_path / "scenes"
    (root / "images").mkdir(parents=True)
    for k in range(2):
        write_tif(root / "images" / f"s{k}.tif", np.full((3, 160, 160), 9, np.uint16))
    code, text, log = init_data(capsys, monkeypatch, tmp_path, root)
    assert code == 0 and "checked: it loads" not in log, log
    assert "labels: null, region: [0, 0, 0.8, 1]}  # CHECK: no labels found, so it cannot train" in text
    assert (
        "init-data: no labels were found for the train and val images (no label files found: no folder "
        f"named labels/masks/gt, no file named *_label or *_mask); {tmp_path}/conf/data/scenes.yaml says "
        "labels: null there, so it cannot train (its images load: 2 train and 2 val scenes). Run it again "
        "with existing=overwrite labels='TEMPLATE'"
    ) in log
    (root / "annot").mkdir()  # labels whose names tell nothing, named by hand
    for k in range(2):
        write_tif(root / "annot" / f"s{k}_cls.tif", np.full((160, 160), k, np.uint8))
    code, text, log = init_data(capsys, monkeypatch, tmp_path, root, "labels='annot/{stem}_cls.tif'")
    assert code == 0 and "checked: it loads (2 train and 2 val scenes inspected)" in log, log
    assert 'train: {images: "images/*.tif", labels: "annot/{stem}_cls.tif"' in text


# --- B: silence where a word is due ----------------------------------------------------------------------


def test_features_without_geometry_are_warned_once_per_file_with_their_count(tmp_path, caplog):
    """The read limited to the scene's footprint never returned them, so the warning never came."""
    label = geojson(
        tmp_path / "lab.geojson", [(None, {"cls": 1}), (square(4, 4), {"cls": 1}), (None, {"cls": 2})]
    )
    images = [write_tif(tmp_path / f"img{k}.tif", np.full((3, 64, 64), 7, np.uint16)) for k in range(2)]
    with caplog.at_level(logging.WARNING):
        for image in images:  # one labels file for two scenes: one warning
            inspect_scene(str(image), str(label), class_codes=[0, 1, 2], vector=VectorOptions(field="cls"))
    said = [r.getMessage() for r in caplog.records if "without geometry" in r.getMessage()]
    assert said == [f"vector label '{label}': 2 feature(s) without geometry skipped (e.g. feature 0)"]


def test_a_label_raster_covering_part_of_its_image_is_warned(tmp_path, caplog):
    image = write_tif(tmp_path / "img.tif", np.full((3, 64, 64), 7, np.uint16))
    half = write_tif(tmp_path / "half.tif", np.ones((64, 16), np.uint8))  # the left quarter
    with caplog.at_level(logging.WARNING):
        inspect_scene(str(image), str(half), class_codes=[0, 1])
    assert (
        f"label '{half}' covers 25% of image '{image}': the other 75% (3072 px) has no label and is ignored"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a split whose region the label covers: nothing to say
        inspect_scene(str(image), str(half), class_codes=[0, 1], region=[0, 0, 0.25, 1])
        inspect_scene(str(image), str(write_tif(tmp_path / "full.tif", np.ones((64, 64), np.uint8))))
    assert "covers" not in caplog.text


def test_predict_vectorize_of_an_all_nodata_scene_says_why_there_are_no_polygons(tmp_path, capsys):
    rng = np.random.default_rng(0)
    good = write_tif(tmp_path / "good.tif", rng.integers(1, 999, (3, 64, 64), dtype=np.uint16), nodata=0)
    empty = write_tif(tmp_path / "empty.tif", np.zeros((3, 64, 64), np.uint16), nodata=0)
    checkpoint = save_tiny_checkpoint(tmp_path / "m.pt", good)
    out = tmp_path / "out" / "empty.tif"
    code, log = run_logged(capsys, "predict", f"checkpoint={checkpoint}", f"input={empty}", f"output={out}",
                        "tile=64", "overlap=0", "device=cpu", "progress=false", "vectorize=true",
                        "check_stats=false")  # fmt: skip
    assert code == 0, log
    assert (
        f"'{out.with_suffix('.gpkg')}' has no polygons: the class map is nodata everywhere (the input has no "
        "valid pixel)"
    ) in log


def test_a_folder_named_like_an_image_is_skipped_and_named(tmp_path, caplog):
    root = make_root(tmp_path / "data")
    folder = root / "train" / "images" / "x.tif"
    folder.mkdir()
    cfg = {"root": str(root), "splits": {"train": {"images": "train/images/*.tif", "labels": None}},
           "classes": [{"code": c, "name": f"c{c}"} for c in range(4)], "ignore_index": 255, "chip_size": 32,
           "max_nodata_fraction": 0.5, "batch_size": 2, "num_workers": 0, "index": False}  # fmt: skip
    with caplog.at_level(logging.WARNING):
        scenes = load_scenes(cfg, "train", progress=False)
        inputs = find_inputs(str(root / "train" / "images" / "*.tif"))
        in_folder = find_inputs(str(root / "train" / "images"))
    assert [Path(s.image).name for s in scenes] == ["a.tif"]
    assert [Path(p).name for (p,) in inputs] == [Path(p).name for (p,) in in_folder] == ["a.tif"]
    assert f"matches 1 folder(s) (e.g. '{folder}'), left out: only files are scenes" in caplog.text
    with pytest.raises(GeosegError, match=rf"label '{folder}' is a folder, not a file; rename or move it"):
        open_raster(folder, "label")


def test_a_band_used_twice_is_said_once_at_start_up(tmp_path, capsys, caplog):
    """Allowed (a grey band copied to three channels), but more often a typo: said once, not per split."""
    root = make_root(tmp_path / "data")
    said = (
        "data.bands [1, 1, 2] uses band 1 more than once: the model gets each copy as an input channel (fine "
        "for a grey band copied to three channels; list each band once otherwise)"
    )
    cache = f"data.cache_dir={tmp_path}/cache"
    with caplog.at_level(logging.WARNING):
        build_data(tiny_train_cfg(root, "data.bands=[1,1,2]", cache), DistInfo())  # train and val inspected
    assert [r.getMessage() for r in caplog.records].count(said) == 1
    args = [f"data.root={root}", "data.demo=null", "data.bands=[1,1,2]", cache, f"output={tmp_path}/s.json"]
    code, log = run_logged(capsys, "stats", *args, "progress=false")
    assert code == 0 and log.count(said) == 1, log
