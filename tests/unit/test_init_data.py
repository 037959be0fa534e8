"""``geoseg init-data DIR``: a starter data config from a folder of the user's GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import compose_config, write_tif
from geoseg.cli import main
from geoseg.config import as_dict
from geoseg.data.build import load_scenes

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)


def user_folder(root: Path, scenes: int = 3, size: int = 320) -> Path:
    """images/tile_<k>.tif (4 named uint16 bands, nodata 0) with labels/tile_<k>_mask.tif (codes 1, 2, 5)."""
    rng = np.random.default_rng(0)
    for k in range(scenes):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(exist_ok=True)
        write_tif(root / "images" / f"tile_{k}.tif", rng.integers(1, 3000, (4, size, size), dtype="uint16"),
                  nodata=0, descriptions=["blue", "green", "red", "nir"])  # fmt: skip
        label = rng.choice(np.array([1, 2, 5], dtype="uint8"), (size, size), p=[0.5, 0.3, 0.2])
        label[:4] = 255
        write_tif(root / "labels" / f"tile_{k}_mask.tif", label, nodata=255)
    return root


def init_data(capsys, *args: str) -> tuple[int, str]:
    try:
        main(["init-data", *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def test_a_folder_of_images_and_masks_gets_a_config_that_trains(tmp_path, capsys):
    root, conf = user_folder(tmp_path / "my scenes"), tmp_path / "conf"
    code, err = init_data(capsys, str(root), f"conf={conf}")
    assert code == 0, err
    path = conf / "data" / "my_scenes.yaml"
    text = path.read_text()
    assert 'images: "images/*.tif", labels: "labels/{stem}_mask.tif", region: [0, 0, 0.8, 1]' in text
    assert "region: [0.8, 0, 1, 1]" in text and "[blue, green, red, nir]" in text
    assert "the images declare 0" in text and "label_nodata: 255" in text
    assert [line.split(",")[0].strip() for line in text.splitlines() if "{code:" in line] == [
        "- {code: 1", "- {code: 2", "- {code: 5"]  # fmt: skip
    assert "chip_size: 64" in text  # the largest that fits the 64-px val strip (0.2 x 320 px)
    cfg = compose_config("train", "data=my_scenes", f"hydra.searchpath=[file://{conf}]")
    data = as_dict(cfg.data)
    assert data["num_workers"] == "auto" and data["demo"] is None  # the rest comes from data/demo.yaml
    assert [s.name for s in load_scenes(data, "val")] == ["tile_0", "tile_1", "tile_2"]
    code, err = init_data(capsys, str(root), f"conf={conf}")
    assert code == 2 and "exists (a data config geoseg wrote); pass existing=overwrite" in err


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty", [], "no GeoTIFF images (*.tif, *.tiff) under"),
        (
            "mixed",
            [],
            "has 2 bands in EPSG:32633 but 'a.tif' has 4 in EPSG:32633; pick one kind with images=",
        ),
        ("mixed", ["images=b*.tif"], None),
        ("small", [], "leaves a val strip narrower than 32 px at val_fraction=0.2"),
        ("float_label", [], "holds fractional values; a label is a map of class codes"),
        ("mixed", ["images=b*.tif", "chip_size=0"], "chip_size=0 must be a whole number of pixels (>= 16)"),
    ],
)
def test_folders_it_cannot_describe_get_one_line(tmp_path, capsys, setup, args, message):
    root = tmp_path / "scenes"
    root.mkdir()
    if setup == "mixed":
        write_tif(root / "a.tif", np.ones((4, 64, 64), "uint16"))
        write_tif(root / "b.tif", np.ones((2, 256, 256), "uint16"))
    if setup == "small":
        write_tif(root / "a.tif", np.ones((4, 64, 64), "uint16"))
    if setup == "float_label":
        write_tif(root / "a.tif", np.ones((4, 256, 256), "uint16"))
        write_tif(root / "a_label.tif", np.full((256, 256), 0.5, "float32"))
    code, err = init_data(capsys, str(root), f"conf={tmp_path / 'conf'}", *args)
    if message is None:
        assert code == 0, err
        return
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_scenes_in_folders_of_their_own_pair_each_image_with_the_label_beside_it(tmp_path, capsys):
    """scene_<k>/image.tif with scene_<k>/label.tif: a {parent} template, an images glob without labels."""
    rng = np.random.default_rng(1)
    root = tmp_path / "per_scene"
    for k in range(2):
        (root / f"scene_{k}").mkdir(parents=True)
        write_tif(root / f"scene_{k}" / "image.tif", rng.integers(1, 999, (3, 256, 256), dtype="uint16"))
        write_tif(root / f"scene_{k}" / "label.tif", np.full((256, 256), k + 1, "uint8"))
    conf = tmp_path / "conf"
    code, err = init_data(capsys, str(root), f"conf={conf}")
    assert code == 0, err
    text = (conf / "data" / "per_scene.yaml").read_text()
    assert 'images: "**/*image.tif", labels: "{parent}/label.tif"' in text
    assert "- {code: 1, name: class_1}" in text and "- {code: 2, name: class_2}" in text  # both labels read


def test_images_beside_their_masks_in_one_folder_get_a_glob_that_leaves_the_masks_out(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root = tmp_path / "flat"
    root.mkdir()
    for k in range(3):
        write_tif(root / f"tile_{k}.tif", rng.integers(1, 999, (3, 256, 256), dtype="uint16"))
        write_tif(root / f"tile_{k}_mask.tif", np.full((256, 256), 3, "uint8"))
    code, err = init_data(capsys, str(root), f"conf={tmp_path / 'conf'}")
    assert code == 0, err
    text = (tmp_path / "conf" / "data" / "flat.yaml").read_text()
    assert 'images: "tile_*[!k].tif", labels: "{stem}_mask.tif"' in text
