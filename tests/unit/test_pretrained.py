"""Pretrained encoders by name: hub caches offline, TorchGeo names and files, band mapping by name, input
scaling, each norm's treatment of pretrained parameters, and the record of the weights used."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models import build_model
from geoseg.models.band_names import canonical_band, match_bands
from geoseg.models.weights import map_first_conv_by_name

ROOT = Path(__file__).resolve().parents[2]
TINY = {"decoder_channels": [32, 16, 16, 8, 8]}
BN = functools.partial(nn.BatchNorm2d)
S2_ALL = [
    "B1",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B7",
    "B8",
    "B8a",
    "B9",
    "B10",
    "B11",
    "B12",
]  # TorchGeo's names


@dataclass
class Stats:
    bands: list
    mean: list
    std: list


def resnet18_state(in_chans: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm/torchvision-layout resnet18 state dict with recognisable first-conv filters per band."""
    torch.manual_seed(seed)
    state = timm.create_model("resnet18", pretrained=False, in_chans=in_chans).state_dict()
    for band in range(in_chans):  # band i's filters are all close to i + 1: easy to follow through a mapping
        state["conv1.weight"][:, band] = band + 1 + 0.01 * torch.randn_like(state["conv1.weight"][:, band])
    return state


def hf_cache_put(hf_home: Path, repo: str, files: dict[str, bytes], revision: str | None = None) -> Path:
    """Files of ``repo`` in the standard Hugging Face cache layout under ``hf_home`` (``refs/main`` when
    no commit ``revision`` is given, as ``hf download`` leaves it)."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = revision or "0123456789abcdef0123456789abcdef01234567"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    if revision is None:
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return snapshot


def safetensors_bytes(state: dict[str, torch.Tensor], tmp_path: Path) -> bytes:
    path = tmp_path / "tmp.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    data = path.read_bytes()
    path.unlink()
    return data


def test_band_names_match_across_spellings_and_common_names():
    assert canonical_band("B4") == canonical_band("b04") == canonical_band("RED") == "red"
    assert canonical_band("B8A") == canonical_band("b8a") == canonical_band("nir08") == "nir08"
    assert canonical_band("B08") == canonical_band("nir") and canonical_band("B08") != canonical_band("B8A")
    assert canonical_band(None) is None and canonical_band(3) is None and canonical_band("VV") == "vv"
    assert canonical_band("B02_blue") == "blue" and canonical_band("B11_swir1") == canonical_band("B11")
    assert canonical_band("Band 4") == "band 4"  # a bare number says nothing about the band
    assert match_bands(["red", "green", "blue"], ["B02", "B03", "B04", "B08", None]) == [2, 1, 0, None, None]


def test_first_conv_by_name_reorders_subsets_supersets_and_fills_unknown_bands():
    weight = torch.stack([torch.full((4, 3, 3), float(i + 1)) for i in range(13)], dim=1)  # band i: i + 1
    subset, words = map_first_conv_by_name(weight, S2_ALL, ["B04", "B03", "B02", "B08"])
    assert [subset[0, j, 0, 0].item() for j in range(4)] == [4.0, 3.0, 2.0, 8.0]
    assert "B04<-B4" in words and "not used: B1, B5" in words
    rgb = torch.stack([torch.full((4, 3, 3), v) for v in (1.0, 2.0, 3.0)], dim=1)
    superset, words = map_first_conv_by_name(
        rgb, ["red", "green", "blue"], ["blue", "nir", "red", "VV", "green"]
    )
    values = [superset[0, j, 0, 0].item() for j in range(5)]
    assert values[0] == 3.0 and values[2] == 1.0 and values[4] == 2.0  # copied unscaled, reordered
    assert values[1] == values[3] == pytest.approx(2.0 * 3 / 5)  # mean filter x P/N for unmatched bands
    assert "nir<-mean" in words and "not used" not in words
    with pytest.raises(GeosegError, match="name 3 bands but their first conv takes 13 inputs"):
        map_first_conv_by_name(weight, ["red", "green", "blue"], ["red"])


def test_hub_name_loads_from_a_prepopulated_cache_with_the_network_off(tmp_path):
    """smp's own repo and revision for resnet18/imagenet, read from HF_HOME by huggingface_hub, offline."""
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    state = resnet18_state()
    state.pop("fc.weight"), state.pop("fc.bias")
    hf_home = tmp_path / "hf"
    snapshot = hf_cache_put(
        hf_home, settings["repo_id"], {"model.safetensors": safetensors_bytes(state, tmp_path),
                                       "config.json": json.dumps({"input_space": "RGB"}).encode()},
        revision=settings["revision"],
    )  # fmt: skip
    script = (
        "import json, torch\n"
        "from geoseg.models import build_model\n"
        "m = build_model('unet', 'resnet18', 4, 2, torch.nn.BatchNorm2d, decoder={'decoder_channels': "
        "[32, 16, 16, 8, 8]}, weights='imagenet', band_names=['B02', 'B03', 'B04', 'B08'])\n"
        "w = m.net.encoder.conv1.weight\n"
        "print(json.dumps({'band_means': [w[:, j].mean().item() for j in range(4)], "
        "'meta': {k: m.meta[k] for k in ('weights', 'weights_source', 'weights_file', 'weights_sha256', "
        "'weights_bands', 'first_conv')}}))\n"
    )
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    means = result["band_means"]
    assert means[0] == pytest.approx(3, abs=0.01) and means[2] == pytest.approx(1, abs=0.01)  # B02=blue
    assert means[3] == pytest.approx(2 * 3 / 4, abs=0.01)  # B08 has no ImageNet filter: mean x 3/4
    meta = result["meta"]
    file = snapshot / "model.safetensors"
    assert meta["weights"] == "imagenet" and meta["weights_source"] == "smp hub"
    assert Path(meta["weights_file"]) == file and meta["first_conv"] == "names"
    assert meta["weights_sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert meta["weights_bands"] == ["red", "green", "blue"]


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline (huggingface_hub reads these constants at each call)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache.parent


def test_timm_encoder_weights_by_tag_from_the_cache(tmp_path, hf_offline):
    cfg = timm.models.get_pretrained_cfg("resnet18.tv_in1k")
    state = resnet18_state(seed=3)
    hf_cache_put(hf_offline, cfg.hf_hub_id, {"model.safetensors": safetensors_bytes(state, tmp_path)})
    model = build_model("unet", "tu-resnet18", 3, 2, BN, decoder=TINY, weights="tv_in1k",
                        band_names=["red", "green", "blue"])  # fmt: skip
    loaded = model.net.encoder.model.state_dict()
    assert torch.equal(loaded["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    assert model.meta["weights_source"] == "timm hub" and model.meta["first_conv"] == "names"
    with pytest.raises(GeosegError, match=r"timm has no pretrained weights 'resnet18.nope'.*tv_in1k"):
        build_model("unet", "tu-resnet18", 3, 2, BN, decoder=TINY, weights="nope")


def test_offline_without_the_file_is_one_line_naming_where_to_put_it(hf_offline):
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["ssl"]
    with pytest.raises(GeosegError) as err:
        build_model("unet", "resnet18", 4, 2, BN, decoder=TINY, weights="ssl")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"encoder.weights=ssl: model.safetensors of the Hugging Face repo {settings['repo_id']}"
    )
    assert "(HF_HUB_OFFLINE is set)" in message
    where = hf_offline / "hub" / "models--smp-hub--resnet18.ssl" / "snapshots" / settings["revision"]
    assert f"put it at {where / 'model.safetensors'}" in message


def torchgeo_file(torch_home: Path, url: str, state: dict) -> Path:
    path = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_torchgeo_name_maps_sentinel2_bands_and_chooses_the_scaling(tmp_path, monkeypatch, caplog):
    torchgeo_models = pytest.importorskip("torchgeo.models", reason="torchgeo names need torchgeo")
    weight = torchgeo_models.get_weight("ResNet18_Weights.SENTINEL2_ALL_MOCO")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = torchgeo_file(tmp_path / "torch", weight.url, resnet18_state(in_chans=13))  # timm layout, 13 bands
    name = "torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO"
    bands = ["B04", "B03", "B02", "B08"]
    dn = Stats(bands, [1200.0, 1100.0, 1000.0, 2500.0], [900.0, 800.0, 700.0, 1500.0])  # L1C digital numbers
    model = build_model("unet", "resnet18", 4, 2, BN, decoder=TINY, weights=name, band_names=bands, stats=dn)
    w = model.net.encoder.conv1.weight
    assert [round(w[:, j].mean().item()) for j in range(4)] == [4, 3, 2, 8]
    assert model.meta["weights_file"] == str(path) and model.meta["weights_bands"] == S2_ALL
    assert model.meta["input_scaling"] == "weights"  # SSL4EO: reflectance x 10000 / 10000
    assert torch.allclose(model.normalize.scale.flatten(), torch.full((4,), 1e-4))
    reflectance = Stats(bands, [0.12, 0.11, 0.10, 0.25], [0.09, 0.08, 0.07, 0.15])  # other units
    with caplog.at_level(logging.WARNING):
        model = build_model("unet", "resnet18", 4, 2, BN, decoder=TINY, weights=name, band_names=bands,
                            stats=reflectance)  # fmt: skip
    assert model.meta["input_scaling"] == "data" and "other units than the weights" in caplog.text
    assert torch.allclose(model.normalize.scale.flatten(), 1 / torch.tensor(reflectance.std))
    with pytest.raises(GeosegError, match=r"are weights of resnet50, but encoder\.name=resnet18"):
        build_model(
            "unet", "resnet18", 4, 2, BN, decoder=TINY, weights="torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO"
        )
    with pytest.raises(GeosegError, match=r"TorchGeo has no weights .ResNet18_Weights\.NOPE."):
        build_model("unet", "resnet18", 4, 2, BN, decoder=TINY, weights="torchgeo:ResNet18_Weights.NOPE")


def test_torchgeo_and_timm_format_files_load_with_stated_bands(tmp_path):
    """A TorchGeo file downloaded by hand is a timm state dict; ``first_conv=names`` needs band names."""
    path = tmp_path / "resnet18_sentinel2_all_moco.pth"
    state = resnet18_state(in_chans=13)
    torch.save(state, path)
    model = build_model("unet", "resnet18", 2, 2, BN, decoder=TINY, weights=str(path), first_conv="mean")
    assert torch.allclose(
        model.net.encoder.conv1.weight,
        state["conv1.weight"].mean(1, keepdim=True).expand(-1, 2, -1, -1) * 13 / 2,
    )
    named = build_model("unet", "resnet18", 2, 2, BN, decoder=TINY, weights=str(path),
                        band_names=["B08", "B04"], weights_bands=S2_ALL)  # fmt: skip
    assert named.meta["first_conv"] == "names" and named.meta["weights_bands"] == S2_ALL
    assert torch.equal(named.net.encoder.conv1.weight, state["conv1.weight"][:, [7, 3]])
    with pytest.raises(GeosegError, match=r"encoder\.weights: no such file rgb\.ph; give the path"):
        build_model("unet", "resnet18", 2, 2, BN, decoder=TINY, weights="rgb.ph")  # a typo, not a hub name
    with pytest.raises(GeosegError, match=r"encoder\.weights_bands='B04' must be a list of band names"):
        build_model("unet", "resnet18", 2, 2, BN, decoder=TINY, weights=str(path), weights_bands="B04")
    with pytest.raises(GeosegError, match="first_conv=names: the weights list no bands"):
        build_model("unet", "resnet18", 2, 2, BN, decoder=TINY, weights=str(path), first_conv="names",
                    band_names=["B04", "B08"])  # fmt: skip


NORM_FATES = {  # norm config -> (keeps pretrained γ/β, keeps running statistics)
    "batchnorm": (True, True), "syncbatchnorm": (True, True), "frozenbatchnorm": (True, True),
    "groupnorm": (True, False), "groupnorm_ws": (True, False), "frn": (True, False),
    "layernorm": (True, False), "instancenorm": (True, False), "identity": (False, False),
}  # fmt: skip


@pytest.mark.parametrize("norm", sorted(NORM_FATES))
def test_each_norm_on_a_pretrained_encoder_keeps_what_is_documented(tmp_path, norm, caplog):
    state = resnet18_state()
    with torch.no_grad():
        state["bn1.weight"].uniform_(0.5, 1.5), state["bn1.bias"].uniform_(-0.5, 0.5)
        state["bn1.running_mean"].uniform_(-1, 1), state["bn1.running_var"].uniform_(0.5, 2)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    factory = instantiate(OmegaConf.load(ROOT / "configs" / "norm" / f"{norm}.yaml"))
    with caplog.at_level(logging.WARNING):
        model = build_model("unet", "resnet18", 3, 2, factory, decoder=TINY, weights=str(path))
    bn1 = model.net.encoder.bn1
    keeps_affine, keeps_stats = NORM_FATES[norm]
    assert (
        getattr(bn1, "weight", None) is not None and torch.equal(bn1.weight, state["bn1.weight"])
    ) == keeps_affine
    assert (getattr(bn1, "running_mean", None) is not None
            and torch.equal(bn1.running_mean, state["bn1.running_mean"])) == keeps_stats  # fmt: skip
    assert ("running statistics of 20 layers are dropped" in caplog.text) == (not keeps_stats)  # in the log


def test_geoseg_checkpoint_transfers_to_other_bands_by_name_with_its_scaling(tmp_path):
    source_stats = Stats([1, 2, 3], [1000.0, 1100.0, 1200.0], [500.0, 600.0, 700.0])
    source = build_model("unet", "resnet18", 3, 2, BN, decoder=TINY, stats=source_stats,
                         band_names=["B02", "B03", "B04"])  # fmt: skip
    path = tmp_path / "best.pt"
    torch.save({"model": source.state_dict(), "meta": source.meta}, path)
    target_stats = Stats([1, 2], [1250.0, 1020.0], [650.0, 480.0])
    model = build_model("unet", "resnet18", 2, 5, BN, decoder=TINY, weights=str(path), stats=target_stats,
                        band_names=["B04", "B02"])  # fmt: skip
    w, theirs = model.net.encoder.conv1.weight, source.net.encoder.conv1.weight
    assert torch.equal(w[:, 0], theirs[:, 2]) and torch.equal(w[:, 1], theirs[:, 0])
    assert model.meta["weights_source"] == "geoseg checkpoint" and model.meta["first_conv"] == "names"
    assert model.meta["input_scaling"] == "weights"  # same units: the source's statistics per band
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([1200.0, 1000.0]))
    data_scaled = build_model(
        "unet", "resnet18", 2, 5, BN, decoder=TINY, weights=str(path), stats=target_stats,
        band_names=["B04", "B02"], input_scaling="data",
    )  # fmt: skip
    assert torch.allclose(data_scaled.normalize.mean.flatten(), torch.tensor([1250.0, 1020.0]))


def test_a_run_records_the_weights_it_started_from(tmp_path, demo_root):
    from conftest import tiny_train_cfg
    from geoseg.engine.fit import fit

    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state(in_chans=3), path)
    cfg = tiny_train_cfg(demo_root, f"encoder.weights={path}", "trainer.max_epochs=2",
                         "encoder.freeze_epochs=1", "encoder.lr_mult=0.5")  # fmt: skip
    summary = fit(cfg, str(tmp_path / "run"))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    record = summary["pretrained"]
    assert record["weights"] == str(path) and record["weights_sha256"] == digest
    assert record["weights_source"] == "file" and record["first_conv"] == "repeat"  # a file names no bands
    meta = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["meta"]
    assert meta["weights_sha256"] == digest and meta["weights_file"] == str(path)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["pretrained"] == record


@pytest.mark.parametrize(
    ("weights", "batch", "expected"),
    [(True, 2, "FrozenBatchNorm2d"), (True, 4, "FrozenBatchNorm2d"), (True, 8, "BatchNorm2d"),
     (False, 2, "BatchNorm2d")],
)  # fmt: skip
def test_norm_auto_freezes_batchnorm_for_a_pretrained_encoder_at_a_small_batch(
    tmp_path, compose_config, weights, batch, expected
):
    path = tmp_path / "resnet18.pth"
    state = resnet18_state()
    state["bn1.running_mean"].fill_(0.5)
    torch.save(state, path)
    overrides = [f"data.batch_size={batch}", "model.decoder_channels=[32,16,16,8,8]"]
    cfg = compose_config("model_info", *overrides, *([f"encoder.weights={path}"] if weights else []))
    assert cfg.norm._target_ == "geoseg.models.auto_norm.auto_norm"  # the default
    from geoseg.models import model_from_config

    model = model_from_config(cfg, in_channels=3, classes=2, stats=None)
    assert model.meta["norm"] == expected and type(model.net.encoder.bn1).__name__ == expected
    kept = torch.equal(model.net.encoder.bn1.running_mean, torch.full((64,), 0.5))
    assert kept == weights  # the pretrained statistics are loaded either way (and then fixed or trained)


def test_a_checkpoint_of_norm_auto_rebuilds_the_norm_it_chose(tmp_path, demo_root):
    from conftest import tiny_train_cfg
    from geoseg.engine.fit import fit
    from geoseg.inference.loaded import load_model

    path = tmp_path / "resnet18.pth"
    torch.save(resnet18_state(in_chans=3), path)
    cfg = tiny_train_cfg(demo_root, f"encoder.weights={path}", "data.batch_size=2", "trainer.max_steps=2")
    fit(cfg, str(tmp_path / "run"))
    loaded = load_model(str(tmp_path / "run" / "best.pt"), torch.device("cpu"))
    assert loaded.model.meta["norm"] == "FrozenBatchNorm2d"
    assert type(loaded.model.net.encoder.bn1).__name__ == "FrozenBatchNorm2d"
