"""SpaceNet building footprints as vector labels (``configs/data/spacenet_vector.yaml``).

Skipped without ``../shared/data``.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from conftest import SHARED_DATA, tiny_train_cfg
from geoseg.data.build import load_scenes
from geoseg.data.labels import open_label_on_grid
from geoseg.engine.fit import fit

SPACENET = SHARED_DATA / "spacenet_buildings"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SPACENET.is_dir(), reason=f"{SPACENET} (../shared/data) not found"),
]


def _cfg(tmp_path, *overrides):
    return tiny_train_cfg(
        SPACENET, "data=spacenet_vector", f"data.stats_path={tmp_path}/stats.json", *overrides
    )


def test_rasterised_footprints_match_the_shipped_label_raster(tmp_path):
    (scene,) = load_scenes(_cfg(tmp_path, "data.splits.train.region=null").data, "train")
    assert scene.vector is not None and scene.label.endswith("geotiff_labels.geojson")
    _, features = open_label_on_grid(scene, [0, 1])
    ours = features.read(1)
    with rasterio.open(SPACENET / "buildings_label.tif") as src:
        reference = src.read(1)
    assert ours.shape == reference.shape
    assert (ours == reference).mean() >= 0.999
    assert 0.03 < ours.mean() < 0.06  # about 4.2% building


def test_spacenet_vector_config_trains(tmp_path):
    summary = fit(_cfg(tmp_path, "trainer.max_steps=2"), str(tmp_path / "run"))
    assert summary["steps"] == 2 and np.isfinite(summary["val"]["loss"])
