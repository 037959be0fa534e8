"""``geoseg export``: ONNX / TorchScript, normalisation inside, and ``geoseg predict`` on an ONNX model."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from conftest import save_tiny_checkpoint, write_tif
from geoseg.cli import main
from geoseg.errors import GeosegError
from geoseg.inference.export import export_model, sidecar_path
from geoseg.inference.loaded import load_model
from geoseg.inference.predict import PredictOptions, predict_scene, prepare

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install '.[onnx]')")


def scene(path, h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = rng.integers(200, 3000, size=(3, h, w), dtype=np.uint16)
    img[:, :10, :12] = 0
    return write_tif(path, img, transform=from_origin(600_000, 4_000_000, 10, 10), nodata=0, tiled=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint (BatchNorm, so the export must use the running statistics) and its ONNX export."""
    folder = tmp_path_factory.mktemp("export")
    ckpt = save_tiny_checkpoint(folder / "model.pt", scene(folder / "train.tif", 64, 64), norm="batchnorm")
    meta = export_model(str(ckpt), "onnx", str(folder / "model.onnx"), tile=64, overlap=16)
    return ckpt, folder / "model.onnx", meta


def predict(model_path, image, output, **options) -> None:
    loaded = load_model(str(model_path), torch.device("cpu"))
    opts = PredictOptions(**{"tile": 64, "overlap": 16, "batch_size": 3, "progress": False, **options})
    (job,) = prepare(loaded, [str(image)], [str(output)], opts)
    predict_scene(loaded, job, opts, torch.device("cpu"), None)


def test_onnx_logits_are_within_1e4_of_pytorch_on_a_chip(exported, tmp_path):
    ckpt, onnx_path, meta = exported
    model = load_model(str(ckpt), torch.device("cpu")).model
    with rasterio.open(scene(tmp_path / "s.tif", 64, 96, seed=3)) as src:
        chip = src.read()[None].astype(np.float32)  # raw values, two chips: a dynamic batch and width
    chips = np.concatenate([chip, chip[:, :, ::-1].copy()])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["logits"], {"bands": chips})
    with torch.no_grad():
        want = model(torch.from_numpy(chips)).numpy()
    assert got.shape == (2, 3, 64, 96)
    assert np.abs(got - want).max() <= 1e-4 and np.abs(want).max() > 0.1
    assert meta["check"]["max_abs_logit_difference"] <= 1e-4


def test_the_sidecar_says_what_a_runtime_needs(exported):
    ckpt, onnx_path, _ = exported
    with open(sidecar_path(str(onnx_path))) as fh:
        side = json.load(fh)
    loaded = load_model(str(ckpt), torch.device("cpu"))
    assert side["stats"]["mean"] == pytest.approx(loaded.stats.mean)
    assert side["stats"]["std"] == pytest.approx(loaded.stats.std)
    assert [c["name"] for c in side["classes"]] == loaded.classes.names == ["class0", "class1", "class2"]
    assert (side["tile"], side["overlap"]) == (64, 16)
    assert (side["input"]["bands"], side["input"]["multiple_of"]) == (3, 8)
    assert side["norm_summary"]["after"] == loaded.model.meta["norm_summary"]["after"]


def test_predict_on_the_onnx_model_gives_the_checkpoints_class_map(exported, tmp_path):
    ckpt, onnx_path, _ = exported
    image = scene(tmp_path / "scene.tif", 150, 131, seed=5)
    predict(ckpt, image, tmp_path / "from_ckpt.tif", probabilities=True)
    predict(onnx_path, image, tmp_path / "from_onnx.tif", probabilities=True)
    with rasterio.open(tmp_path / "from_ckpt.tif") as a, rasterio.open(tmp_path / "from_onnx.tif") as b:
        assert np.array_equal(a.read(), b.read()) and a.transform == b.transform
        assert len(np.unique(a.read(1))) > 2  # not a constant map
        assert b.tags()["geoseg_checkpoint"] == str(onnx_path)
    probs = tmp_path / "from_ckpt_probs.tif", tmp_path / "from_onnx_probs.tif"
    with rasterio.open(probs[0]) as a, rasterio.open(probs[1]) as b:
        assert np.abs(a.read().astype(int) - b.read().astype(int)).max() <= 1  # uint8 rounding, ~1e-5 apart


def test_exporting_a_groupnorm_model_says_it_normalises_each_tile_by_itself(tmp_path, caplog):
    ckpt = save_tiny_checkpoint(tmp_path / "gn.pt", scene(tmp_path / "train.tif", 64, 64), norm="groupnorm")
    with caplog.at_level("INFO"):
        export_model(str(ckpt), "onnx", str(tmp_path / "gn.onnx"), tile=64, overlap=16)
    assert "normalise each tile by itself" in caplog.text
    image = scene(tmp_path / "scene.tif", 96, 96, seed=2)
    predict(ckpt, image, tmp_path / "tile.tif", norm_stats="tile")  # what the export does
    predict(tmp_path / "gn.onnx", image, tmp_path / "onnx.tif")
    with rasterio.open(tmp_path / "tile.tif") as a, rasterio.open(tmp_path / "onnx.tif") as b:
        assert np.array_equal(a.read(), b.read()) and b.tags()["geoseg_norm_stats"] == "tile"


@pytest.mark.usefixtures("release_hydra_logging")
def test_predict_takes_tile_and_overlap_from_the_sidecar_and_refuses_amp(exported, tmp_path, capsys):
    _, onnx_path, _ = exported
    image = scene(tmp_path / "scene.tif", 70, 70)
    main(["predict", f"checkpoint={onnx_path}", f"input={image}", f"output={tmp_path}/p.tif", "device=cpu"])
    with rasterio.open(tmp_path / "p.tif") as pred:
        assert pred.tags()["geoseg_tile"] == "64/16"
    with pytest.raises(SystemExit):
        main(["predict", f"checkpoint={onnx_path}", f"input={image}", f"output={tmp_path}/q.tif", "amp=bf16",
              "device=cpu"])  # fmt: skip
    assert "amp=bf16 does not apply to the ONNX model" in capsys.readouterr().err


def test_an_onnx_model_without_its_sidecar_or_onnxruntime_is_one_line(exported, tmp_path, monkeypatch):
    _, onnx_path, _ = exported
    alone = tmp_path / "alone.onnx"
    alone.write_bytes(onnx_path.read_bytes())
    with pytest.raises(GeosegError, match=r"has no sidecar '.*alone.onnx.json'"):
        load_model(str(alone), torch.device("cpu"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(GeosegError, match=r"needs onnxruntime: pip install '\.\[onnx\]'"):
        load_model(str(onnx_path), torch.device("cpu"))


@pytest.mark.usefixtures("release_hydra_logging")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_from_the_cli_matches_pytorch(exported, tmp_path, capsys):
    ckpt, _, _ = exported
    out = tmp_path / "model.torchscript.pt"
    main(["export", f"checkpoint={ckpt}", "format=torchscript", f"output={out}"])
    with open(sidecar_path(str(out))) as fh:
        meta = json.load(fh)
    scripted = torch.jit.load(str(out))
    chips = torch.rand(1, 3, 32, 64) * 3000
    with torch.no_grad():
        want = load_model(str(ckpt), torch.device("cpu")).model(chips)
        assert torch.allclose(scripted(chips), want, atol=1e-5)
    assert meta["model_format"] == "torchscript" and meta["check"]["max_abs_logit_difference"] <= 1e-4
    with pytest.raises(GeosegError, match="format='tflite' is not an export format"):
        export_model(str(ckpt), "tflite", str(tmp_path / "m.tflite"))
    with pytest.raises(SystemExit):
        main(["export", "format=onnx"])
    assert "missing checkpoint=; usage: geoseg export checkpoint=" in capsys.readouterr().err
