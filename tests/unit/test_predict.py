"""Scene prediction: georeferencing, nodata, seamless blending, bounded memory, errors, atomic output."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from torch import nn

from conftest import save_tiny_checkpoint, write_tif
from geoseg.data.scenes import inspect_scene
from geoseg.errors import GeosegError
from geoseg.inference.inputs import output_paths
from geoseg.inference.loaded import load_model
from geoseg.inference.predict import PredictOptions, predict_scene, prepare
from geoseg.inference.sliding import predict_blocks
from geoseg.inference.tile_source import TileSource
from geoseg.inference.tiling import blend_window, plan_tiles, positions, ramp
from geoseg.inference.writer import PredictionWriter, read_classes_tag


def scene(path: Path, h: int, w: int, bands: int = 3, seed: int = 0, nodata_corner: bool = True) -> Path:
    """A uint16 scene with texture and, optionally, an all-nodata (0) corner."""
    rng = np.random.default_rng(seed)
    img = rng.integers(200, 3000, size=(bands, h, w), dtype=np.uint16)
    if nodata_corner:
        img[:, : h // 4, : w // 3] = 0
    return write_tif(
        path, img, transform=from_origin(600_000, 4_000_000, 10, 10), nodata=0, tiled=True, block=16
    )


@pytest.fixture
def ckpt(tmp_path):
    image = scene(tmp_path / "train.tif", 64, 64)
    return save_tiny_checkpoint(tmp_path / "model.pt", image)


def predict(ckpt_path: Path, image: Path, output: Path, **options) -> dict:
    loaded = load_model(str(ckpt_path), torch.device("cpu"))
    opts = PredictOptions(**{"tile": 64, "overlap": 16, "batch_size": 4, "progress": False, **options})
    (job,) = prepare(loaded, [str(image)], [str(output)], opts)
    return predict_scene(loaded, job, opts, torch.device("cpu"), None)


class PixelModel(nn.Module):
    """A model whose output at a pixel depends only on that pixel: a 1×1 convolution."""

    def __init__(self, bands: int, classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(bands, classes, 1)
        self.in_channels, self.size_divisor = bands, 1
        self.meta = {"arch": "pixel", "encoder": "none", "classes": classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float() / 1000.0)


def test_positions_cover_the_scene_and_the_ramp_is_positive_and_smooth():
    assert positions(100, 32, 24) == [0, 24, 48, 68]
    assert positions(20, 32, 24) == [0]
    r = ramp(32, 8)
    assert (r > 0).all() and r[8:24].tolist() == [1.0] * 16 and np.allclose(r, r[::-1])
    assert np.all(np.diff(r[:9]) > 0)
    assert blend_window(32, 0).min() == 1.0


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "panel", "block"), [
    (100, 77, 32, 8, 64, 16),   # not a multiple of the tile; two panels; partial last blocks
    (20, 27, 32, 8, 32, 16),    # smaller than one tile: one padded tile
    (64, 64, 32, 0, 64, 32),    # no overlap
])  # fmt: skip
def test_blended_sliding_window_equals_one_full_forward_pass(tmp_path, h, w, tile, overlap, panel, block):
    image = scene(tmp_path / "s.tif", h, w, nodata_corner=False).as_posix()
    model = PixelModel(3, 4)
    plan = plan_tiles(h, w, tile, overlap, panel)
    out = np.full((4, h, w), np.nan, dtype=np.float32)
    with rasterio.open(image) as src:
        for window, probs, invalid in float_blocks(image, plan, model, 4, batch_size=3, block=block):
            rows, cols = window.toslices()
            assert np.isnan(out[:, rows, cols]).all(), "a pixel was written twice"
            assert not invalid.any()
            out[:, rows, cols] = probs
        full = torch.from_numpy(src.read().astype(np.float32))[None]
    expected = model(full).softmax(1)[0].detach().numpy()
    assert not np.isnan(out).any(), "a pixel was never written"
    np.testing.assert_allclose(out, expected, atol=1e-5)


def float_blocks(image, plan, model, classes, *, batch_size, block, workers=2, **kwargs):
    """(window, float32 probabilities, invalid) of each block predict_blocks hands out for ``image``."""
    cpu = torch.device("cpu")
    stack = inspect_scene(str(image), None)
    fill = np.zeros(len(stack.bands), dtype=np.uint16)
    tiles = TileSource(stack.reader, fill, plan, batch_size, workers, cpu)
    for pending in predict_blocks(tiles, plan, model, cpu, classes, block=block, keep_probs="float32",
                                  **kwargs):  # fmt: skip
        done = pending.finish()
        yield done.window, done.probs, done.invalid


def test_flip_tta_of_a_pixelwise_model_changes_nothing(tmp_path, ckpt):
    image = scene(tmp_path / "s.tif", 48, 40, nodata_corner=False)
    plan = plan_tiles(48, 40, 32, 8, 256)
    plain = [p for _, p, _ in float_blocks(image, plan, PixelModel(3, 2), 2, batch_size=2, block=256)]
    tta = [p for _, p, _ in float_blocks(image, plan, PixelModel(3, 2), 2, batch_size=2, block=256, tta=True)]
    np.testing.assert_allclose(np.concatenate(tta, 1), np.concatenate(plain, 1), atol=1e-6)


def test_output_has_the_input_grid_and_nodata_footprint(tmp_path, ckpt):
    image = scene(tmp_path / "scene.tif", 150, 131)
    out = tmp_path / "out" / "pred.tif"
    predict(ckpt, image, out, probabilities=True)
    with (
        rasterio.open(image) as src,
        rasterio.open(out) as pred,
        rasterio.open(tmp_path / "out" / "pred_probs.tif") as probs,
    ):
        assert (pred.crs, pred.transform, pred.shape) == (src.crs, src.transform, src.shape)
        assert (probs.crs, probs.transform, probs.shape, probs.count) == (
            src.crs,
            src.transform,
            src.shape,
            3,
        )
        assert pred.dtypes[0] == "uint8" and pred.nodata == 255 and pred.profile["tiled"]
        assert pred.profile["compress"] == "deflate"
        classes = pred.read(1)
        nodata = (src.read() == 0).all(0)
        assert nodata.sum() > 0
        np.testing.assert_array_equal(classes == 255, nodata)
        assert classes[~nodata].max() < 3
        p = probs.read().astype(int)
        assert np.abs(p[:, ~nodata].sum(0) - 255).max() <= 2  # probabilities x 255 sum to 255
        assert (probs.read_masks(1) == 0).sum() == nodata.sum()
        assert pred.colormap(1)[1][:3] == (60, 150, 90)
        # bands of class probabilities, not a colour image: no red/green/blue/alpha for QGIS to apply
        assert probs.colorinterp[0] == ColorInterp.gray and ColorInterp.alpha not in probs.colorinterp
        names = read_classes_tag(pred).names
        assert probs.descriptions == tuple(f"p_{n}" for n in names)
    assert category_names(out, tmp_path / "legend.vrt") == names


def category_names(class_map: Path, vrt: Path) -> list[str]:
    """The category names GDAL (and so QGIS) reads for band 1 of ``class_map``: those of its VRT copy.

    GDAL finds the ``.aux.xml`` sidecar by listing the folder, which geoseg's reading settings turn
    off (GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR, set once another test has read scenes): a GIS lists it.
    """
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE"):
        rasterio.shutil.copy(class_map, vrt, driver="VRT")
    band = ElementTree.parse(vrt).getroot().find("VRTRasterBand")
    return [c.text for c in band.find("CategoryNames")]


def test_a_scene_smaller_than_one_tile_works(tmp_path, ckpt):
    image = scene(tmp_path / "small.tif", 21, 30)
    predict(ckpt, image, tmp_path / "small_pred.tif", tile=64)
    with rasterio.open(tmp_path / "small_pred.tif") as pred:
        assert pred.shape == (21, 30)


def test_cog_output_is_a_cloud_optimized_geotiff(tmp_path, ckpt):
    image = scene(tmp_path / "scene.tif", 700, 600, nodata_corner=False)
    predict(ckpt, image, tmp_path / "pred.tif", tile=128, overlap=0, cog=True, check_stats=False)
    with rasterio.open(tmp_path / "pred.tif") as pred:
        assert pred.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert pred.overviews(1), "a COG of 700 px should carry overviews"
        assert pred.shape == (700, 600)


def test_peak_memory_does_not_grow_with_scene_size(tmp_path, ckpt, monkeypatch):
    """Numpy buffers (tracemalloc) for a 4x larger scene stay within 30% of the smaller one's."""
    monkeypatch.setattr("geoseg.inference.loaded.rebuild_model", lambda saved, path: PixelModel(3, 3))
    peaks = []
    for side in (512, 1024):
        image = scene(tmp_path / f"s{side}.tif", side, side, nodata_corner=False)
        tracemalloc.start()
        predict(ckpt, image, tmp_path / f"p{side}.tif", tile=64, overlap=16, panel=256, check_stats=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] <= 1.3 * peaks[0], f"peak numpy memory {peaks[0] / 1e6:.1f} MB -> {peaks[1] / 1e6:.1f} MB"


def test_band_count_mismatch_is_a_clear_error(tmp_path, ckpt):
    image = scene(tmp_path / "two_bands.tif", 64, 64, bands=2)
    with pytest.raises(GeosegError, match=r"has 2 bands but .*model.pt' was trained on 3"):
        predict(ckpt, image, tmp_path / "pred.tif")


def test_band_names_of_the_checkpoint_are_looked_up_in_the_input(tmp_path):
    rng = np.random.default_rng(1)
    names = ["blue", "green", "red", "nir"]
    train = write_tif(
        tmp_path / "t.tif", rng.integers(1, 900, (4, 64, 64), dtype=np.uint16), descriptions=names
    )
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", train, bands=["nir", "red"])
    flipped = write_tif(tmp_path / "f.tif", rng.integers(1, 900, (4, 64, 64), dtype=np.uint16),
                        descriptions=names[::-1])  # fmt: skip
    loaded = load_model(str(ckpt), torch.device("cpu"))
    (job,) = prepare(loaded, [str(flipped)], [str(tmp_path / "p.tif")], PredictOptions(tile=64, overlap=16))
    assert job.bands == [1, 2]
    plain = write_tif(tmp_path / "plain.tif", rng.integers(1, 900, (4, 64, 64), dtype=np.uint16))
    with pytest.raises(GeosegError, match="checkpoint's bands"):
        prepare(loaded, [str(plain)], [str(tmp_path / "q.tif")], PredictOptions(tile=64, overlap=16))


def test_input_scaled_unlike_the_training_data_is_refused(tmp_path, ckpt):
    rng = np.random.default_rng(0)
    reflectance = write_tif(tmp_path / "r.tif", rng.random((3, 64, 64), dtype=np.float32) * 0.3)
    with pytest.raises(GeosegError, match=r"does not look like the training data.*check_stats=false"):
        predict(ckpt, reflectance, tmp_path / "pred.tif")


def test_no_file_under_the_output_name_when_prediction_fails_midway(tmp_path, ckpt, monkeypatch):
    image = scene(tmp_path / "scene.tif", 600, 300)
    calls = []

    def failing_write(self, block):
        calls.append(block.window)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        done = block.finish()
        self.classes.write(done.labels, 1, window=done.window)

    monkeypatch.setattr(PredictionWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        predict(ckpt, image, tmp_path / "out" / "pred.tif", probabilities=True, check_stats=False)
    assert len(calls) == 2
    assert os.listdir(tmp_path / "out") == [], "temporary or partial files were left behind"


def test_existing_outputs_are_refused_skipped_or_replaced(tmp_path, ckpt):
    image = scene(tmp_path / "scene.tif", 64, 64)
    out = tmp_path / "pred.tif"
    out.write_bytes(b"old")
    loaded = load_model(str(ckpt), torch.device("cpu"))
    with pytest.raises(GeosegError, match=r"exists .*; pass existing=overwrite"):
        prepare(loaded, [str(image)], [str(out)], PredictOptions(tile=64, overlap=16))
    assert (
        prepare(loaded, [str(image)], [str(out)], PredictOptions(tile=64, overlap=16, existing="skip")) == []
    )
    with pytest.raises(GeosegError, match="not a prediction geoseg wrote; geoseg never replaces it"):
        predict(ckpt, image, out, existing="overwrite")  # a file geoseg did not write
    assert out.read_bytes() == b"old"
    out.unlink()
    predict(ckpt, image, out)
    first = out.stat().st_mtime_ns
    predict(ckpt, image, out, existing="overwrite")  # a prediction geoseg wrote is replaced
    assert out.stat().st_mtime_ns != first
    with rasterio.open(out) as pred:
        assert pred.shape == (64, 64)


def test_several_inputs_get_one_output_each_and_never_collide(tmp_path):
    assert output_paths(["a/x.tif", "b/y.tif"], "out") == ["out/x.tif", "out/y.tif"]
    assert output_paths(["a/x.tif"], "pred.tif") == ["pred.tif"]
    with pytest.raises(GeosegError, match="would both write"):
        output_paths(["a/x.tif", "b/x.tif"], "out")
    with pytest.raises(GeosegError, match="pass a folder"):
        output_paths(["a/x.tif", "b/y.tif"], "out.tif")
    with pytest.raises(GeosegError, match="is the input itself"):
        output_paths(["a/x.tif"], "a/x.tif")


def test_tile_options_that_cannot_work_are_refused(tmp_path, ckpt):
    image = scene(tmp_path / "scene.tif", 64, 64)
    loaded = load_model(str(ckpt), torch.device("cpu"))
    for opts, message in [
        (PredictOptions(tile=50), "multiple of 8"),
        (PredictOptions(tile=64, overlap=40), "between 0 and tile/2"),
        (PredictOptions(tile=64, overlap=16, panel=300), "multiple of 256"),
        (PredictOptions(tile=64, overlap=16, tta="no"), r"^tta='no' must be true or false$"),  # truthy
        (PredictOptions(tile=64, overlap=16, probabilities=1), r"^probabilities=1 must be true or false$"),
        (PredictOptions(tile=64, overlap=16, batch_size="abc"), r"^batch_size='abc' must be a whole number"),
        (PredictOptions(tile=64, overlap=16, batch_size=0), r"^batch_size=0 must be a whole number >= 1"),
    ]:
        with pytest.raises(GeosegError, match=message):
            prepare(loaded, [str(image)], [str(tmp_path / "p.tif")], opts)
