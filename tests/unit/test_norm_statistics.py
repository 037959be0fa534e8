"""Held norm statistics at inference: class maps that do not depend on the tiling (issue 40)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from conftest import save_tiny_checkpoint, write_tif
from geoseg.errors import GeosegError
from geoseg.inference.loaded import load_model
from geoseg.inference.norm_calibration import (
    calibration_windows,
    check_norm_stats,
    held_by_default,
    resolve_norm_stats,
)
from geoseg.inference.predict import PredictOptions, predict_scene, prepare
from geoseg.inference.tiling import plan_tiles
from geoseg.inference.tiling_consistency import change_rate, edge_band, region_miou, seam_score
from geoseg.models.norm_statistics import (
    HeldNorm,
    collect_statistics,
    hold_statistics,
    tile_dependent_layers,
)
from geoseg.models.norms import FilterResponseNorm2d, GroupNorm, InstanceNorm2d, LayerNorm2d

# A pixel-wise GroupNorm model with held statistics gives the same class at every tile size: at most
# this share of the pixels may differ (float rounding in the blending, on a near tie).
HELD_TOLERANCE = 0.001


class PixelGroupNormModel(nn.Module):
    """1x1 convolutions around a GroupNorm: the norm's statistics are all a pixel's class depends on
    besides the pixel itself (no kernel reaches over a tile edge)."""

    def __init__(self, bands: int, classes: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.norm = nn.Conv2d(bands, 16, 1), norm or GroupNorm(16, num_groups=4)
        self.out = nn.Conv2d(16, classes, 1, bias=False)
        with torch.no_grad():  # every channel is band 1; class 0 where it is above its mean, else class 1
            self.inp.weight.zero_(), self.inp.bias.zero_(), self.out.weight.zero_()
            self.inp.weight[:, 0] = 1.0
            self.out.weight[0], self.out.weight[1] = 1.0, -1.0
        self.in_channels, self.size_divisor = bands, 1
        self.meta = {"arch": "pixel", "encoder": "none", "classes": classes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.inp(x.float() / 1000.0)))


def textured_scene(path: Path, size: int = 128, seed: int = 3) -> Path:
    """uint16 scene with a bright and a dark half, so a tile's own statistics depend on where it lies."""
    rng = np.random.default_rng(seed)
    img = rng.integers(200, 1200, size=(3, size, size)).astype(np.uint16)
    img[:, :, size // 2 :] += 2500
    img[:, size // 3 : size // 2, :] //= 3
    return write_tif(path, img, transform=from_origin(600_000, 4_000_000, 10, 10), tiled=True, block=16)


def class_map(ckpt: Path, image: Path, out: Path, model: nn.Module | None = None, **options) -> np.ndarray:
    """The class map ``geoseg predict`` writes for ``image`` (with ``model`` in place of the checkpoint's)."""
    loaded = load_model(str(ckpt), torch.device("cpu"))
    if model is not None:
        loaded.model = model.eval()
    opts = PredictOptions(**{"overlap": 16, "batch_size": 4, "progress": False, **options})
    (job,) = prepare(loaded, [str(image)], [str(out)], opts)
    predict_scene(loaded, job, opts, torch.device("cpu"), None)
    with rasterio.open(out) as src:
        return src.read(1)


@pytest.fixture
def scene_and_models(tmp_path):
    image = textured_scene(tmp_path / "scene.tif")
    gn = save_tiny_checkpoint(tmp_path / "gn.pt", image, norm="groupnorm", seed=1)
    bn = save_tiny_checkpoint(tmp_path / "bn.pt", image, norm="batchnorm", seed=1)
    return image, gn, bn


def test_plain_groupnorm_map_changes_with_the_tile_size(tmp_path, scene_and_models):
    """What geoseg 0.1 did (norm_stats=tile): each tile's own statistics, another class map per tile size."""
    image, gn, _ = scene_and_models
    small = class_map(gn, image, tmp_path / "a.tif", PixelGroupNormModel(3, 3), tile=32, norm_stats="tile")
    large = class_map(gn, image, tmp_path / "b.tif", PixelGroupNormModel(3, 3), tile=128, norm_stats="tile")
    assert change_rate(small, large) > 0.05


def test_default_holds_scene_statistics_so_two_tile_sizes_agree(tmp_path, scene_and_models):
    image, gn, _ = scene_and_models
    small = class_map(gn, image, tmp_path / "a.tif", PixelGroupNormModel(3, 3), tile=32)
    large = class_map(gn, image, tmp_path / "b.tif", PixelGroupNormModel(3, 3), tile=128)
    assert change_rate(small, large) <= HELD_TOLERANCE
    with rasterio.open(tmp_path / "a.tif") as src:
        assert src.tags()["geoseg_norm_stats"] == "scene"


def test_held_statistics_take_most_of_the_tiling_out_of_a_unet(tmp_path, scene_and_models):
    """A (random) tiny U-Net also changes where zero padding at tile edges reaches, as BatchNorm does;
    holding the statistics removes the rest."""
    image, gn, _ = scene_and_models
    maps = {(m, t): class_map(gn, image, tmp_path / f"{m}{t}.tif", tile=t, norm_stats=m)
            for m in ("tile", "scene") for t in (64, 128)}  # fmt: skip
    plain = change_rate(maps["tile", 64], maps["tile", 128])
    held = change_rate(maps["scene", 64], maps["scene", 128])
    assert held < plain / 2


def test_batchnorm_map_is_the_same_in_every_mode(tmp_path, scene_and_models):
    image, _, bn = scene_and_models
    modes = ("tile", "scene", "auto")
    maps = [class_map(bn, image, tmp_path / f"out_{m}.tif", tile=64, norm_stats=m) for m in modes]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])
    with rasterio.open(tmp_path / "out_auto.tif") as src:
        assert src.tags()["geoseg_norm_stats"] == "tile"


@pytest.mark.parametrize("make", [lambda: GroupNorm(16, num_groups=4), lambda: InstanceNorm2d(16),
                                  lambda: FilterResponseNorm2d(16)])  # fmt: skip
def test_statistics_of_the_input_itself_reproduce_the_layer(make):
    """Held statistics collected from exactly the input being normalised give the layer's own output."""
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-1.0, 1.0)
    model = nn.Sequential(nn.Identity(), layer).eval()
    x = torch.randn(1, 16, 12, 12) * 3 + 1
    stats = collect_statistics(model, [x])
    with hold_statistics(model, stats) as swapped:
        assert swapped == 1 and isinstance(model[1], HeldNorm)
        held = model(x)
    assert model[1] is layer  # put back
    torch.testing.assert_close(held, layer(x), atol=1e-4, rtol=1e-4)


def test_pooled_variance_is_the_variance_of_all_windows_as_one_image():
    layer = GroupNorm(8, num_groups=2)
    model = nn.Sequential(layer).eval()
    a, b = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 16, 16) * 2 + 5
    stats = collect_statistics(model, [a, b])["0"]
    both = torch.cat([a, b], dim=3).reshape(1, 2, -1)
    var, mean = torch.var_mean(both, dim=2, correction=0)
    torch.testing.assert_close(stats.mean.float(), mean[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stats.variance(pooled=True).float(), var[0], atol=1e-3, rtol=1e-4)
    assert (stats.variance(pooled=False) < stats.variance(pooled=True)).all()
    assert stats.windows == 2


def test_only_layers_that_normalise_over_pixels_depend_on_the_tile():
    model = nn.Sequential(GroupNorm(16), InstanceNorm2d(16), FilterResponseNorm2d(16), nn.BatchNorm2d(16),
                          LayerNorm2d(16), nn.Identity())  # fmt: skip
    assert sorted(tile_dependent_layers(model)) == ["0", "1", "2"]


def test_a_one_pixel_map_keeps_the_original_layer():
    """DeepLabV3+'s image pooling branch: a 1x1 map normalises to the bias under the layer's own rule."""
    layer = InstanceNorm2d(4)
    model = nn.Sequential(layer).eval()
    stats = collect_statistics(model, [torch.randn(2, 4, 8, 8)])
    with hold_statistics(model, stats):
        out = model(torch.randn(1, 4, 1, 1))
    torch.testing.assert_close(out, layer.bias.detach().view(1, 4, 1, 1).expand_as(out))


def test_calibration_windows_cover_the_scene_or_region_and_are_thinned_evenly():
    windows = calibration_windows(100, 90, 32, 1000)
    assert len(windows) == 4 * 3 and windows[-1].row_off + 32 == 100 and windows[-1].col_off + 32 == 90
    thinned = calibration_windows(1000, 1000, 32, 10)
    assert len(thinned) == 10 and thinned[0].row_off == 0 and thinned[-1].row_off == 1000 - 32
    region = calibration_windows(100, 100, 16, 1000, region=(0, 75, 100, 100))
    assert all(w.col_off >= 75 and w.col_off + w.width <= 100 for w in region)
    assert calibration_windows(20, 20, 32, 8)[0].width == 20  # a scene smaller than a chip: one window


def test_norm_stats_option_is_checked_in_one_line(tmp_path, scene_and_models):
    image, gn, bn = scene_and_models
    with pytest.raises(GeosegError, match="norm_stats='whole' must be one of auto, tile, scene"):
        check_norm_stats("whole")
    loaded = load_model(str(gn), torch.device("cpu"))
    assert resolve_norm_stats("auto", loaded) == "scene" and resolve_norm_stats("tile", loaded) == "tile"
    assert resolve_norm_stats("scene", load_model(str(bn), torch.device("cpu"))) == "tile"
    with pytest.raises(GeosegError, match="norm_windows=0 must be a whole number >= 1"):
        opts = PredictOptions(tile=32, overlap=0, norm_windows=0)
        prepare(loaded, [str(image)], [str(tmp_path / "x.tif")], opts)


def test_change_rate_edge_band_and_seam_score():
    plan = plan_tiles(64, 64, 32, 0, 256)
    band = edge_band(plan, 2)
    assert band[:, 30:34].all() and band[30:34, :].all()
    assert not band[10, :30].any() and not band[10, 34:].any()  # scene borders are no tile edges
    assert band.sum() == 2 * 4 * 64 - 16
    a = np.zeros((64, 64), np.uint8)
    b = a.copy()
    b[:, 31] = 1  # changes only on the tile edge
    b[5, 5] = 1  # and one elsewhere
    assert change_rate(a, b) == pytest.approx(65 / 4096)
    seam = seam_score(a, b, band)
    assert seam["seam_score"] > 10 and seam["elsewhere"] > 0
    b[10, 10] = 255  # no class: left out
    assert change_rate(a, b) == pytest.approx(65 / 4095)


def test_region_miou_matches_a_hand_count():
    label = np.array([[0, 0, 1, 1], [0, 0, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 0]], np.uint8)
    # class 0: tp 3, fp 1, fn 1 -> 3/5; class 1: tp 2, fp 1, fn 1 -> 2/4
    assert region_miou(pred, label, 2) == pytest.approx((3 / 5 + 2 / 4) / 2)


def test_a_scene_without_a_half_valid_window_is_predicted_tile_by_tile_with_a_warning(tmp_path, caplog):
    img = np.zeros((3, 96, 96), dtype=np.uint16)
    img[:, :20, :20] = 900  # valid only in a corner: no 64-px window is half valid
    image = write_tif(tmp_path / "mostly_nodata.tif", img, transform=from_origin(600_000, 4_000_000, 10, 10),
                      nodata=0)  # fmt: skip
    gn = save_tiny_checkpoint(tmp_path / "gn.pt", textured_scene(tmp_path / "train.tif"), norm="groupnorm")
    with caplog.at_level("WARNING"):
        out = class_map(gn, image, tmp_path / "out.tif", tile=64)
    assert "no window of 64 px has half its pixels valid" in caplog.text
    assert (out[:20, :20] != 255).all() and (out[40:, 40:] == 255).all()
    with rasterio.open(tmp_path / "out.tif") as src:
        assert src.tags()["geoseg_norm_stats"] == "tile"


def test_auto_holds_groupnorm_and_instancenorm_statistics_but_not_frn():
    assert held_by_default(PixelGroupNormModel(3, 2, GroupNorm(16, num_groups=4)))
    assert held_by_default(PixelGroupNormModel(3, 2, InstanceNorm2d(16)))
    assert not held_by_default(PixelGroupNormModel(3, 2, FilterResponseNorm2d(16)))
    assert not held_by_default(PixelGroupNormModel(3, 2, nn.BatchNorm2d(16)))


def test_region_labels_are_class_indices_inside_the_split_region_only(tmp_path):
    import dataclasses

    from rasterio.windows import Window

    from geoseg.data.scenes import inspect_scene
    from geoseg.inference.tiling_consistency import region_labels

    image = textured_scene(tmp_path / "img.tif", size=32)
    codes = np.full((1, 32, 32), 20, dtype=np.uint8)
    codes[:, :, :8] = 10
    label = write_tif(tmp_path / "lab.tif", codes, transform=from_origin(600_000, 4_000_000, 10, 10))
    scene = dataclasses.replace(inspect_scene(str(image), str(label)), region=(0, 16, 32, 32))
    whole = region_labels(scene, [10, 20])
    assert (whole[:, :16] == 255).all() and (whole[:, 16:] == 1).all()
    part = region_labels(scene, [10, 20], Window(12, 4, 8, 8))  # columns 12..19: 4 outside, 4 inside
    assert (part[:, :4] == 255).all() and (part[:, 4:] == 1).all()
    free = region_labels(dataclasses.replace(scene, region=None), [10, 20])
    assert (free[:, :8] == 0).all() and (free[:, 8:] == 1).all()
