"""Pretrained weights from local files: formats, first-conv strategies, refusals and warnings
(hub names, TorchGeo names and band mapping by name: test_pretrained.py)."""

from __future__ import annotations

import functools
import logging
import warnings

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models import build_model
from geoseg.models.norms import GroupNorm
from geoseg.models.weights import adapt_first_conv

TINY = {"decoder_channels": [32, 16, 16, 8, 8]}
BN = functools.partial(nn.BatchNorm2d)


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
    """A torchvision resnet18 state dict with recognisable (non-default) BN statistics."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("weights") / "resnet18-torchvision.pth"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def build(weights, bands=4, first_conv="repeat", norm=BN, **kw):
    torch.manual_seed(1)
    return build_model("unet", "resnet18", bands, 3, norm, decoder=TINY, weights=str(weights),
                       first_conv=first_conv, **kw)  # fmt: skip


def test_repeat_follows_smps_repeat_and_scale(torchvision_resnet18):
    path, state = torchvision_resnet18
    w = state["conv1.weight"]
    model = build(path, bands=5, first_conv="repeat")
    got = model.net.encoder.conv1.weight
    expected = torch.stack([w[:, i % 3] for i in range(5)], dim=1) * 3 / 5
    assert torch.allclose(got, expected)
    assert model.meta["first_conv"] == "repeat" and model.meta["weights"] == str(path)
    one = build(path, bands=1, first_conv="repeat").net.encoder.conv1.weight
    assert torch.allclose(one, w.sum(1, keepdim=True))


def test_mean_gives_every_band_the_scaled_rgb_mean(torchvision_resnet18):
    path, state = torchvision_resnet18
    w = state["conv1.weight"]
    got = build(path, bands=6, first_conv="mean").net.encoder.conv1.weight
    for band in range(6):
        assert torch.allclose(got[:, band], w.mean(1) * 3 / 6)


def test_rgb_then_random_keeps_rgb_filters_on_the_named_bands(torchvision_resnet18):
    path, state = torchvision_resnet18
    w = state["conv1.weight"]
    torch.manual_seed(1)
    scratch = build_model("unet", "resnet18", 6, 3, BN, decoder=TINY).net.encoder.conv1.weight
    model = build(path, bands=6, first_conv="rgb_then_random", rgb_channels=[3, 2, 1])
    got = model.net.encoder.conv1.weight
    for band, rgb in ((3, 0), (2, 1), (1, 2)):
        assert torch.equal(got[:, band], w[:, rgb])
    for band in (0, 4, 5):  # the model's own seeded random initialisation
        assert torch.equal(got[:, band], scratch[:, band])
    with pytest.raises(GeosegError, match="rgb_channels"):
        build(path, bands=6, first_conv="rgb_then_random", rgb_channels=[0, 1, 6])
    with pytest.raises(GeosegError, match="rgb_then_random"):
        adapt_first_conv(w, torch.zeros(64, 2, 7, 7), "rgb_then_random")


def test_three_bands_load_unchanged_and_everything_else_loads_too(torchvision_resnet18):
    path, state = torchvision_resnet18
    model = build(path, bands=3)
    assert model.meta["first_conv"] == "none"
    enc = model.net.encoder.state_dict()
    for key, value in state.items():
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(enc[key], value), key


def test_unknown_strategy_is_a_clear_error(torchvision_resnet18):
    with pytest.raises(GeosegError, match=r"encoder\.first_conv='stack'"):
        build(torchvision_resnet18[0], first_conv="stack")


@pytest.mark.parametrize("layout", ["smp_encoder", "smp_model", "lightning"])
def test_smp_and_wrapped_state_dicts_load(tmp_path, torchvision_resnet18, layout):
    _, state = torchvision_resnet18
    donor = build_model("unet", "resnet18", 3, 3, BN, decoder=TINY)
    donor.net.encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    stored = {
        "smp_encoder": donor.net.encoder.state_dict(),
        "smp_model": donor.net.state_dict(),
        "lightning": {"state_dict": {f"model.net.{k}": v for k, v in donor.net.state_dict().items()}},
    }[layout]
    path = tmp_path / f"{layout}.pt"
    torch.save(stored, path)
    model = build(path, bands=3)
    assert torch.equal(model.net.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_timm_safetensors_load_into_a_tu_encoder(tmp_path):
    torch.manual_seed(0)
    donor = timm.create_model("efficientnet_b0", pretrained=False)
    path = tmp_path / "efficientnet_b0.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    model = build_model("unet", "tu-efficientnet_b0", 4, 3, BN, decoder=TINY, weights=str(path))
    w = donor.state_dict()["conv_stem.weight"]
    got = model.net.encoder.model.conv_stem.weight
    assert torch.allclose(got, torch.stack([w[:, i % 3] for i in range(4)], dim=1) * 3 / 4)
    assert torch.equal(model.net.encoder.model.blocks[2][0].conv_pw.weight, donor.blocks[2][0].conv_pw.weight)


def test_batchnorm_weights_into_groupnorm_log_that_running_stats_are_dropped(torchvision_resnet18, caplog):
    path, state = torchvision_resnet18
    with caplog.at_level(logging.WARNING):
        model = build(path, norm=functools.partial(GroupNorm, num_groups=8))
    assert "running statistics of 20 layers are dropped by norm=GroupNorm (their γ/β are kept)" in caplog.text
    assert torch.equal(model.net.encoder.bn1.weight, state["bn1.weight"])  # γ kept
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        kept = build(path)  # BatchNorm keeps them: nothing to say
    assert "dropped" not in caplog.text
    assert torch.equal(kept.net.encoder.bn1.running_mean, state["bn1.running_mean"])


def test_frozen_batchnorm_keeps_pretrained_running_stats(torchvision_resnet18):
    from torchvision.ops import FrozenBatchNorm2d

    path, state = torchvision_resnet18
    model = build(path, norm=FrozenBatchNorm2d)
    assert isinstance(model.net.encoder.bn1, FrozenBatchNorm2d)
    assert torch.equal(model.net.encoder.bn1.running_var, state["bn1.running_var"])


def test_missing_unreadable_and_mismatched_files_are_clear_errors(tmp_path, torchvision_resnet18):
    with pytest.raises(GeosegError, match="no such file"):
        build(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GeosegError, match="cannot read weights file"):
        build(bad)
    other = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), other)
    with pytest.raises(GeosegError, match=r"does not fit this encoder|matches \d+ of"):
        build(other)


def test_geoseg_checkpoint_starts_a_model_with_another_head(tmp_path, caplog):
    trained = build_model("unet", "resnet18", 4, 3, BN, decoder=TINY)
    with torch.no_grad():
        trained.net.decoder.blocks[0].conv1[0].weight.fill_(0.25)
    path = tmp_path / "best.pt"
    torch.save({"model": trained.state_dict(), "meta": trained.meta, "epoch": 3}, path)
    with caplog.at_level(logging.WARNING):
        model = build_model("unet", "resnet18", 4, 5, BN, decoder=TINY, weights=str(path))
    assert torch.all(model.net.decoder.blocks[0].conv1[0].weight == 0.25)
    assert model.net.segmentation_head[0].weight.shape[0] == 5
    assert "start fresh" in caplog.text and "segmentation_head" in caplog.text
    with pytest.raises(GeosegError, match=r"trained on 4 input channels.*cannot be matched by name"):
        build_model("unet", "resnet18", 6, 3, BN, decoder=TINY, weights=str(path))


def test_frozen_batchnorm_from_a_geoseg_checkpoint_keeps_its_statistics(tmp_path):
    from torchvision.ops import FrozenBatchNorm2d

    trained = build_model("unet", "resnet18", 4, 3, BN, decoder=TINY)
    trained.train()
    trained(torch.randn(4, 4, 64, 64) * 3)
    path = tmp_path / "last.pt"
    torch.save({"model": trained.state_dict(), "meta": trained.meta}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # statistics come from the checkpoint: no "frozen at identity" warning
        model = build_model("unet", "resnet18", 4, 3, FrozenBatchNorm2d, decoder=TINY, weights=str(path))
    assert torch.equal(model.net.encoder.bn1.running_mean, trained.net.encoder.bn1.running_mean)
    assert not torch.all(model.net.encoder.bn1.running_mean == 0)
