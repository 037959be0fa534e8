"""Messy inputs that once gave a silent wrong answer: GDAL mask bands, bigger-model encoder weights and
damaged statistics files (issue 19, cases 2, 6 and 7). Each test failed on the code before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from test_bad_inputs import make_root, train_args

from conftest import run_error, write_tif
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.scenes import inspect_scene
from geoseg.data.stats import compute_stats, load_stats
from geoseg.data.windows import Chip
from geoseg.errors import GeosegError


def _masked_scene(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A uint16 scene with no nodata value and an internal mask (``write_mask``) hiding a block of
    extreme values, as GDAL writes a per-dataset mask."""
    rng = np.random.default_rng(0)
    img = rng.integers(400, 600, size=(3, 64, 64)).astype(np.uint16)
    hidden = np.zeros((64, 64), dtype=bool)
    hidden[10:30, 5:50] = True
    img[:, hidden] = 60000  # garbage under the mask
    path = write_tif(tmp_path / "masked.tif", img, tiled=True)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(np.where(hidden, 0, 255).astype(np.uint8))
    return path, img, hidden


def test_a_gdal_mask_band_marks_pixels_invalid_in_chips_and_statistics(tmp_path):
    path, img, hidden = _masked_scene(tmp_path)
    with rasterio.open(path) as src:
        assert src.nodata is None and rasterio.enums.MaskFlags.per_dataset in src.mask_flag_enums[0]
    scene = inspect_scene(str(path), None)
    stats = compute_stats([scene], progress=False)
    np.testing.assert_allclose(stats.mean, img[:, ~hidden].mean(axis=1), rtol=1e-12)
    assert max(stats.max) < 600 and stats.count == (~hidden).sum()
    chip = ChipDataset([scene], 64, ClassMap([0]), fill=[1.0] * 3)[Chip(0, 0, 0)]["image"].numpy()
    np.testing.assert_array_equal((chip == 1).all(0), hidden)


def test_a_gdal_mask_band_is_nodata_in_predictions(tmp_path):
    from conftest import save_tiny_checkpoint
    from geoseg.inference.loaded import load_model
    from geoseg.inference.predict import PredictOptions, predict_scene, prepare

    path, _, hidden = _masked_scene(tmp_path)
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", path)
    loaded = load_model(str(ckpt), torch.device("cpu"))
    opts = PredictOptions(tile=64, overlap=0, progress=False)
    (job,) = prepare(loaded, [str(path)], [str(tmp_path / "p.tif")], opts)
    predict_scene(loaded, job, opts, torch.device("cpu"), None)
    with rasterio.open(tmp_path / "p.tif") as pred:
        np.testing.assert_array_equal(pred.read(1) == pred.nodata, hidden)


def test_encoder_weights_of_a_bigger_model_of_the_family_are_refused(tmp_path):
    import torchvision

    from geoseg.models.build import build_model

    weights = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), weights)
    with pytest.raises(GeosegError, match=r"encoder.weights=.*resnet34.pth has 80 tensors this encoder does "
                       r"not \(e.g. layer1\.2\.conv1\.weight, ") as err:  # fmt: skip
        build_model("unet", "resnet18", 3, 2, torch.nn.BatchNorm2d, encoder_depth=3,
                    decoder={"decoder_channels": [16, 8, 8]}, weights=str(weights))  # fmt: skip
    assert "\n" not in str(err.value)
    own = tmp_path / "resnet18.pth"  # the matching weights (classifier included) still load
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), own)
    build_model("unet", "resnet18", 3, 2, torch.nn.BatchNorm2d, encoder_depth=3,
                decoder={"decoder_channels": [16, 8, 8]}, weights=str(own))  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({"mean": [float("nan"), 1.0, 1.0]}, "band 1 has mean nan"),
        ({"std": [1.0, -2.0, 1.0]}, "band 2 has std -2.0"),
        ({"std": [1.0, 1.0]}, "'std' has 2 values for 3 bands"),
    ],
)
def test_a_damaged_stats_file_is_one_line_naming_it(tmp_path, capsys, damage, message):
    root = make_root(tmp_path / "data")
    stats_file = root / "stats.json"
    image = root / "train" / "images" / "a.tif"
    stats = compute_stats([inspect_scene(str(image), None)], progress=False)
    stats_file.write_text(json.dumps({**json.loads(stats.to_json()), **damage}))
    with pytest.raises(GeosegError, match=message):
        load_stats(str(stats_file))
    line = run_error(capsys, *train_args(root))
    assert line.startswith(f"geoseg: error: statistics '{stats_file}': ") and message in line


def _score(tmp_path, predicted: np.ndarray, label: np.ndarray):
    from geoseg.inference.loaded import ClassInfo
    from geoseg.inference.scoring import score

    pred = write_tif(tmp_path / "pred.tif", predicted.astype(np.uint8), nodata=255)
    lab = write_tif(tmp_path / "lab.tif", label.astype(np.uint8), nodata=254)
    names = ClassInfo([0, 1, 2, 3], ["a", "b", "c", "d"], [(0, 0, 0)] * 4)
    return score(str(pred), str(lab), names)


def test_evaluate_scores_out_of_range_predictions_as_wrong_and_refuses_garbage(tmp_path, caplog):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, size=(64, 64))
    garbage = np.full((64, 64), 9)  # index 9 against a 4-class list: was folded into class 3 (mIoU 1.0)
    label_d = np.full((64, 64), 3)
    message = r"4096 of 4096 scored pixels of '.*pred.tif' hold values that are no class index \(0\.\.3\)"
    with pytest.raises(GeosegError, match=message):
        _score(tmp_path, garbage, label_d)
    some = label.copy()
    some[:8] = 9  # 1/8 of the pixels: scored as wrong, counted, warned
    result = _score(tmp_path, some, label)
    assert result["out_of_range_predictions"] == 8 * 64
    assert abs(result["accuracy"] - 7 / 8) < 1e-9 and result["miou"] < 0.9
    assert any("predicted pixels hold no class index" in r.getMessage() for r in caplog.records)


def test_evaluate_refuses_labels_whose_codes_are_outside_the_class_list(tmp_path):
    rng = np.random.default_rng(1)
    predicted = rng.integers(0, 4, size=(64, 64))
    with pytest.raises(GeosegError, match=r"4096 of 4096 label pixels of '.*lab.tif' hold codes that are not "
                       r"in the class list \(codes \[0, 1, 2, 3\]\)"):  # fmt: skip
        _score(tmp_path, predicted, np.full((64, 64), 7))
    label = predicted.copy()
    label[:4] = 7  # a few unmapped codes: skipped and counted
    result = _score(tmp_path, predicted, label)
    assert result["unmapped_label_pixels"] == 4 * 64 and result["miou"] == 1.0
    assert result["pixels"] == 60 * 64


def test_a_label_nodata_that_is_also_a_class_code_is_refused(tmp_path, capsys):
    root = make_root(tmp_path / "data")
    line = run_error(capsys, *train_args(root, "data.label_nodata=3"))
    assert line.startswith("geoseg: error: label nodata 3 (data.label_nodata) is also a class code")
    label = write_tif(tmp_path / "lab255.tif", np.full((64, 64), 1, np.uint8), nodata=255)
    image = root / "train" / "images" / "a.tif"
    with pytest.raises(GeosegError, match=r"label nodata 255 \(the nodata value '.*lab255.tif' declares\)"):
        inspect_scene(str(image), str(label), class_codes=[0, 1, 255])
    from geoseg.inference.loaded import ClassInfo
    from geoseg.inference.scoring import score

    pred = write_tif(tmp_path / "p.tif", np.ones((64, 64), np.uint8), nodata=255)
    with pytest.raises(GeosegError, match=r"label nodata 2 \(data.label_nodata\) is also a class code"):
        score(str(pred), str(label), ClassInfo([0, 1, 2], ["a", "b", "c"], [(0, 0, 0)] * 3), label_nodata=2)


def _corrupt_band_two(path: Path) -> None:
    """Rewrite ``path`` tiled and band-interleaved, then zero every tile of band 2 but the last one
    (the start-up check reads the last block of each band, so it still passes)."""
    with rasterio.open(path) as src:
        data, profile = src.read(), src.profile
    profile.update(tiled=True, blockxsize=16, blockysize=16, compress="deflate", interleave="band")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        tiles = [(int(src.get_tag_item(f"BLOCK_OFFSET_{i}_{j}", "TIFF", bidx=2)),
                  int(src.get_tag_item(f"BLOCK_SIZE_{i}_{j}", "TIFF", bidx=2)))
                 for j in range(src.height // 16) for i in range(src.width // 16)]  # fmt: skip
    raw = bytearray(path.read_bytes())
    for offset, size in tiles[:-1]:
        raw[offset : offset + size] = bytes(size)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("workers", [pytest.param(0, marks=pytest.mark.slow), 1])  # 1 worker: it hung
def test_a_corrupt_tile_read_by_a_worker_ends_the_run_in_one_line_without_hanging(tmp_path, workers):
    root = make_root(tmp_path / "data")
    image = root / "train" / "images" / "a.tif"
    stats = compute_stats([inspect_scene(str(image), None)], progress=False)
    stats.key = ""  # a pre-key file: a keyed one would see the rewritten (corrupted) scene
    (root / "stats.json").write_text(stats.to_json())  # cached: start-up never reads the bad tiles
    _corrupt_band_two(image)
    args = train_args(root, f"data.num_workers={workers}", "data.persistent_workers=false")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "geoseg", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)  # hung before
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith(f"geoseg: error: cannot read '{image}' (window ") and "corrupt" in lines[0]


def _rgbn(path: Path, order=(0, 1, 2, 3), gain: float = 1.0) -> Path:
    """A 4-band uint8 scene like NAIP (R, G, B, NIR: each band its own mean and contrast), bands in
    ``order``, brightness times ``gain``."""
    rng = np.random.default_rng(7)
    field = rng.random((96, 96))
    bands = [70 + 40 * field, 90 + 30 * field, 65 + 25 * field, 150 - 60 * field]
    img = np.stack([bands[i] for i in order]) * gain + rng.normal(0, 3, (4, 96, 96))
    return write_tif(path, np.clip(img, 1, 255).astype(np.uint8), nodata=0)


def _prepare(ckpt: Path, image: Path, tmp_path: Path):
    from geoseg.inference.loaded import load_model
    from geoseg.inference.predict import PredictOptions, prepare

    loaded = load_model(str(ckpt), torch.device("cpu"))
    output = str(tmp_path / f"{image.stem}_pred.tif")
    return prepare(loaded, [str(image)], [output], PredictOptions(tile=64, overlap=16))


def test_predict_refuses_a_band_reversed_input_and_warns_on_a_shifted_one(tmp_path, caplog):
    """Issue 19 case 9: N,B,G,R for a model trained on R,G,B,N passed the statistics check (each band
    alone is within 2 training stds), and a brightness shift of about 1 training std passed silently."""
    from conftest import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", _rgbn(tmp_path / "train.tif"), norm="groupnorm")
    reversed_ = _rgbn(tmp_path / "nbgr.tif", order=(3, 2, 1, 0))
    with pytest.raises(GeosegError) as err:
        _prepare(ckpt, reversed_, tmp_path)
    message = str(err.value)
    assert message.startswith(f"input '{reversed_}' has its bands in another order than the training data (")
    assert "band 1 looks like training band 4" in message and "band 4 looks like training band 1" in message
    assert "(gdal_translate -b 4 -b 3 -b 2 -b 1 IN.tif OUT.tif), or pass check_stats=false" in message

    with caplog.at_level("WARNING"):
        _prepare(ckpt, _rgbn(tmp_path / "same.tif"), tmp_path)
        assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
        _prepare(ckpt, _rgbn(tmp_path / "bright.tif", gain=1.25), tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"input '{tmp_path / 'bright.tif'}' differs from the training data (band means up to " in warning
    assert "predictions may be less accurate" in warning and "stats_warn=0.5" in warning


def test_a_reordering_that_fits_only_a_little_better_is_not_reported():
    """A 3 x 5 px scene's band order 'fit the training statistics 1.0x better' and was warned about: the
    warning level (the best order's misfit at most 0.8 of the given order's) was never applied."""
    from geoseg.inference.stats_check import likely_order

    assert likely_order(np.array([[3.0, 2.7], [2.7, 3.0]])) is None  # 0.9 of the misfit: noise
    cols, ratio = likely_order(np.array([[1.0, 0.7], [0.7, 1.0]]))  # 0.7: a warning
    assert cols.tolist() == [1, 0] and ratio == pytest.approx(0.7)
    assert likely_order(np.array([[0.2, 1.0], [1.0, 0.2]])) is None  # the given order fits best
