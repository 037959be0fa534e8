"""``data.files`` values that Hydra and YAML read as numbers (issue 35, class 7): Landsat 7 ships its bands
as ``..._10.tif``, ``..._20.tif``, so ``data.files=[10,20,30]`` arrives as integers. They were refused ("must
be a file name like B4 ... got 10"); now they are names, through stats, train and predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import tiny_run, write_tif
from geoseg.cli import main
from geoseg.data.band_files import check_grid_rule, parse_files
from geoseg.data.scene_paths import find_scene_files
from geoseg.errors import GeosegError

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)

NUMBERS = (10, 20, 30)


def landsat7(root: Path) -> Path:
    """Two scenes LE07_A and LE07_B of three single-band files ``LE07_<s>_<10|20|30>.tif`` (uint16, 64 px),
    and a label per scene, ``labels/LE07_<s>.tif`` (codes 0, 1)."""
    rng = np.random.default_rng(7)
    (root / "scenes").mkdir(parents=True)
    (root / "labels").mkdir()
    for scene in ("A", "B"):
        for number in NUMBERS:
            write_tif(root / "scenes" / f"LE07_{scene}_{number}.tif",
                      rng.integers(1, 999, (64, 64), dtype=np.uint16), nodata=0)  # fmt: skip
        write_tif(root / "labels" / f"LE07_{scene}.tif", rng.integers(0, 2, (64, 64), dtype=np.uint8))
    return root


def data_options(root: Path) -> list[str]:
    """The data overrides for the two Landsat 7 scenes: A trains, B validates."""
    labels = '"labels/{scene}.tif"'
    return [f"data.root={root}", "data.demo=null", f"data.cache_dir={root}/cache", "data.chip_size=32",
        'data.splits.train.images="scenes/LE07_A_{file}.tif"', f"data.splits.train.labels={labels}",
        'data.splits.val.images="scenes/LE07_B_{file}.tif"', f"data.splits.val.labels={labels}",
        "data.files=[10,20,30]", "data.classes=[{code: 0, name: land}, {code: 1, name: water}]",
    ]  # fmt: skip


def test_whole_numbers_are_file_names_and_fractions_or_booleans_are_not():
    entries = parse_files([10, {"name": 20, "bands": [1]}, "B6_VCID_1"])
    assert [e.name for e in entries] == ["10", "20", "B6_VCID_1"]
    assert check_grid_rule(20, entries) == "20"  # data.grid=20: the grid of the ..._20.tif file
    with pytest.raises(GeosegError, match=r"data.files\[0\] must be a file name like B4 .*got 1.5; "
                       r'quote a name that looks like a fraction: "1.5"'):  # fmt: skip
        parse_files([1.5])
    with pytest.raises(GeosegError, match=r"data.files\[1\] must be a file name .*got True"):
        parse_files([10, True])
    with pytest.raises(GeosegError, match=r"data.files lists \['10'\] more than once"):
        parse_files([10, "10"])


def test_numbered_band_files_train_and_predict_end_to_end(tmp_path, capsys):
    root = landsat7(tmp_path / "le07")
    run = tmp_path / "run"
    main(["stats", *data_options(root), "progress=false", f"output={tmp_path / 'stats.json'}"])
    assert (tmp_path / "stats.json").exists()
    main(["train", f"hydra.run.dir={run}", *tiny_run(root, *data_options(root)), "trainer.max_epochs=1",
          "data.chips_per_epoch=8", "trainer.diagnostics.train_max_chips=0",
          "trainer.diagnostics.bn_statistics=false", "encoder.depth=3", "model.decoder_channels=[16,8,8]",
          f"data.stats_path={tmp_path / 'stats.json'}"])  # fmt: skip
    assert (run / "best.pt").exists()
    out = tmp_path / "pred"
    main(["predict", f"checkpoint={run / 'best.pt'}", f'input="{root}/scenes/LE07_B_{{file}}.tif"',
          f"output={out}", "tile=64", "overlap=0", "device=cpu", "progress=false"])  # fmt: skip
    with rasterio.open(out / "LE07_B.tif") as src:
        assert src.shape == (64, 64) and set(np.unique(src.read(1))) <= {0, 1}
    again = tmp_path / "again"  # files= and grid= given to predict are names too
    main(["predict", f"checkpoint={run / 'best.pt'}", f'input="{root}/scenes/LE07_B_{{file}}.tif"',
          f"output={again}", "files=[10,20,30]", "grid=20", "tile=64", "overlap=0", "device=cpu",
          "progress=false"])  # fmt: skip
    assert (again / "LE07_B.tif").exists()


def test_a_yaml_number_that_lost_its_leading_zero_is_named_in_the_message(tmp_path):
    for band in ("01", "02"):
        write_tif(tmp_path / f"S_{band}.tif", np.ones((8, 8), np.uint16))
    with pytest.raises(GeosegError, match=r"no image matches .*S_\{file\}.tif'; check data.root and "
                       r"data.splits.train.images \(YAML reads a number such as 01 as 1: quote"):  # fmt: skip
        find_scene_files(str(tmp_path), "S_{file}.tif", None, parse_files([1, 2]))
