"""Sentinel-1 + Sentinel-2 stacked from two real files (``configs/data/sen1floods11_s1s2.yaml``).

Skipped without ``../shared/data``.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from conftest import SHARED_DATA, tiny_train_cfg
from geoseg.data.build import load_scenes
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.windows import Chip
from geoseg.engine.fit import fit
from geoseg.inference.inputs import find_inputs, output_paths
from geoseg.inference.loaded import load_model
from geoseg.inference.predict import PredictOptions, predict_scene, prepare

FLOODS = SHARED_DATA / "sen1floods11"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not FLOODS.is_dir(), reason=f"{FLOODS} (../shared/data) not found"),
]


def _cfg(tmp_path, *overrides):
    return tiny_train_cfg(
        FLOODS, "data=sen1floods11_s1s2", f"data.stats_path={tmp_path}/stats.json", *overrides
    )


def test_s1s2_chips_are_both_files_stacked(tmp_path):
    (scene,) = load_scenes(_cfg(tmp_path).data, "train")
    assert len(scene.bands) == 15 and scene.dtype == "float32" and scene.name == "Spain_7370579"
    assert scene.band_names[-2:] == ("VV", "VH") and scene.label.endswith("Spain_7370579_LabelHand.tif")
    with (
        rasterio.open(FLOODS / "Spain_7370579_S2Hand.tif") as s2,
        rasterio.open(FLOODS / "Spain_7370579_S1Hand.tif") as s1,
    ):
        stack = np.concatenate([s2.read().astype(np.float32), s1.read()])
    invalid = (stack[:13] == 0).any(0) | np.isnan(stack[13:]).any(0)
    chip = ChipDataset([scene], 128, ClassMap([0, 1]), fill=[-1.0] * 15)[Chip(0, 100, 200)]["image"].numpy()
    window = stack[:, 100:228, 200:328]
    np.testing.assert_array_equal(chip, np.where(invalid[100:228, 200:328], np.float32(-1), window))


def test_s1s2_config_trains_and_predicts_on_the_s2_grid(tmp_path):
    summary = fit(_cfg(tmp_path, "trainer.max_steps=2"), str(tmp_path / "run"))
    assert summary["steps"] == 2 and 0.0 <= summary["val"]["miou"] <= 1.0
    loaded = load_model(str(tmp_path / "run" / "last.pt"), torch.device("cpu"))
    assert [e.name for e in loaded.files] == ["S2Hand", "S1Hand"] and loaded.num_bands == 15
    inputs = find_inputs(str(FLOODS / "*_{file}.tif"), loaded.files)
    assert len(inputs) == 1 and len(inputs[0]) == 2
    opts = PredictOptions(tile=128, overlap=16, batch_size=4, progress=False)
    (job,) = prepare(loaded, inputs, output_paths(inputs, str(tmp_path / "pred"), ["Spain_7370579"]), opts)
    result = predict_scene(loaded, job, opts, torch.device("cpu"), None)
    with rasterio.open(result["output"]) as pred, rasterio.open(FLOODS / "Spain_7370579_S2Hand.tif") as s2:
        assert (pred.crs, pred.transform, pred.shape) == (s2.crs, s2.transform, s2.shape)
        assert set(np.unique(pred.read(1))) <= {0, 1, 255}
