"""Scene prediction on real scenes from ``../shared/data``: grid round trips and nodata footprints.

The checkpoints are untrained tiny U-Nets whose band statistics come from the scene itself; what is
checked is the geometry of the output, not the quality of the classes. Skipped without the data.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import SHARED_DATA, save_tiny_checkpoint
from geoseg.inference.loaded import load_model
from geoseg.inference.predict import PredictOptions, predict_scene, prepare

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} (../shared/data) not found"),
]
NAIP = SHARED_DATA / "naip_scene" / "m_4709963_se_14_1_20200831.tif"
LANDSAT = SHARED_DATA / "landsat8_scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"


def run(image, tmp_path, nodata=None, **options):
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", image, nodata=nodata)
    loaded = load_model(str(ckpt), torch.device("cpu"))
    opts = PredictOptions(progress=False, **options)
    (job,) = prepare(loaded, [str(image)], [str(tmp_path / "pred.tif")], opts)
    predict_scene(loaded, job, opts, torch.device("cpu"), None)
    return tmp_path / "pred.tif"


def test_naip_scene_round_trips_its_grid_and_nodata(tmp_path):
    if not NAIP.exists():
        pytest.skip(f"{NAIP} not found")
    out = run(NAIP, tmp_path, tile=256, overlap=32)
    with rasterio.open(NAIP) as src, rasterio.open(out) as pred:
        assert src.height % 256 and src.width % 256  # not a multiple of the tile
        assert (pred.crs, pred.transform, pred.shape) == (src.crs, src.transform, src.shape)
        nodata = (src.read() == src.nodata).all(0)
        np.testing.assert_array_equal(pred.read(1) == pred.nodata, nodata)


def test_landsat_scene_collar_becomes_nodata_with_the_config_override(tmp_path):
    out = run(LANDSAT, tmp_path, nodata=0, tile=512, overlap=64)
    with rasterio.open(LANDSAT) as src, rasterio.open(out) as pred:
        assert (pred.crs, pred.transform, pred.shape) == (src.crs, src.transform, src.shape)
        collar = (src.read() == 0).all(0)
        assert 0.1 < collar.mean() < 0.25
        np.testing.assert_array_equal(pred.read(1) == pred.nodata, collar)
