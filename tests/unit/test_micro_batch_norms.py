"""Norms for micro-batches: GroupNorm groups from channels, Weight Standardization, FRN+TLU."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from geoseg.models import build_model
from geoseg.models.norms import FilterResponseNorm2d, GroupNorm, groups_from_channels, norm_preset
from geoseg.models.weight_standardization import EPS, WSConv2d, convs_feeding_norms, standardize

FLOOR, MAX_GROUPS = 16, 32  # configs/norm/groupnorm.yaml


def quiet_build(arch, encoder, norm, bands=4, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(arch, encoder, bands, 3, norm, **kwargs)


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("arch", ["unet", "fpn", "deeplabv3plus", "unetplusplus"])
def test_the_default_group_rule_never_makes_groups_of_fewer_than_16_channels(arch, encoder):
    """Every GroupNorm of the shipped default: channels/group >= 16 unless the layer is narrower than 16
    (then one group of all its channels), at most 32 groups, and 32 on layers of 512 channels or more."""
    model = quiet_build(arch, encoder, norm_preset("groupnorm"))
    layers = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert layers
    for layer in layers:
        channels, groups = layer.num_channels, layer.num_groups
        assert channels % groups == 0 and 1 <= groups <= MAX_GROUPS
        assert channels // groups >= FLOOR or (channels < FLOOR and groups == 1), (channels, groups)
        if channels >= FLOOR * MAX_GROUPS:
            assert groups == MAX_GROUPS
    assert any(layer.num_channels == 16 and layer.num_groups == 1 for layer in layers) or arch in (
        "fpn",
        "deeplabv3plus",
    )  # fmt: skip  (U-Net decoders end at 16 channels: once 16 groups of 1)


def test_the_group_rule_by_hand_and_a_fixed_count_still_works():
    assert [groups_from_channels(c) for c in (8, 16, 24, 32, 48, 64, 256, 512, 2048)] == [
        1,
        1,
        1,
        2,
        3,
        4,
        16,
        32,
        32,
    ]
    assert groups_from_channels(96, channels_per_group=8, max_groups=32) == 12
    assert GroupNorm(16).num_groups == 1 and GroupNorm(16, num_groups=32).num_groups == 16  # geoseg 0.1 rule


def test_weight_standardised_conv_has_standard_filters_and_the_plain_conv_output():
    torch.manual_seed(0)
    conv = WSConv2d(5, 7, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.mul_(3).add_(0.5)
    w = standardize(conv.weight).detach()
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.zeros(7), atol=1e-6)
    raw = conv.weight.detach().var(dim=(1, 2, 3), unbiased=False)
    assert torch.allclose(w.var(dim=(1, 2, 3), unbiased=False), raw / (raw + EPS), atol=1e-6)  # 1 but for ε
    assert torch.allclose(w.var(dim=(1, 2, 3), unbiased=False), torch.ones(7), atol=1e-3)
    plain = nn.Conv2d(5, 7, 3, padding=1, bias=True)
    plain.load_state_dict({"weight": w, "bias": conv.bias.detach()})
    x = torch.randn(2, 5, 9, 9)
    assert torch.allclose(conv(x), plain(x), atol=1e-5)
    assert torch.allclose(conv(x), F.conv2d(x, w, conv.bias, padding=1), atol=1e-5)


def test_groupnorm_ws_standardises_the_convs_that_feed_norms_and_loads_plain_weights(tmp_path):
    plain = quiet_build("unet", "resnet18", norm_preset("groupnorm"), bands=3)
    ws = quiet_build("unet", "resnet18", norm_preset("groupnorm_ws"), bands=3)
    feeding = convs_feeding_norms(plain.net, torch.zeros(1, 3, 64, 64))
    converted = {n for n, m in ws.net.named_modules() if isinstance(m, WSConv2d)}
    assert converted == set(feeding) and len(converted) == sum(
        isinstance(m, nn.GroupNorm) for m in plain.modules()
    )  # fmt: skip  (every norm here is fed by a conv)
    assert not isinstance(ws.net.segmentation_head[0], WSConv2d)  # the head feeds no norm
    assert ws.meta["norm_summary"]["weight_standardized_convs"] == len(converted)
    ws.load_state_dict(plain.state_dict())  # the same keys: plain checkpoints load as they are
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    pretrained = quiet_build("unet", "resnet18", norm_preset("groupnorm_ws"), bands=3, weights=str(path))
    conv = pretrained.net.encoder.layer1[0].conv1
    assert isinstance(conv, WSConv2d) and torch.equal(conv.weight, torch.load(path)["layer1.0.conv1.weight"])


def test_filter_response_norm_matches_the_papers_formula():
    torch.manual_seed(1)
    frn = FilterResponseNorm2d(4, eps=1e-6)
    with torch.no_grad():
        frn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        frn.bias.copy_(torch.tensor([0.0, 0.1, -0.2, 0.3]))
        frn.tau.copy_(torch.tensor([-0.5, 0.0, 0.2, -10.0]))
    x = torch.randn(3, 4, 5, 6) * 4
    xd = x.double().numpy()
    nu2 = (xd**2).mean(axis=(2, 3), keepdims=True)
    g, b, t = (p.detach().double().numpy().reshape(1, -1, 1, 1) for p in (frn.weight, frn.bias, frn.tau))
    expected = np.maximum(g * xd / np.sqrt(nu2 + 1e-6) + b, t)
    np.testing.assert_allclose(frn(x).detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["groupnorm", "groupnorm_ws", "frn", "instancenorm", "layernorm", "identity"]
)
def test_batch_independent_norms_give_a_sample_the_same_output_alone_or_in_a_batch(name):
    torch.manual_seed(0)
    model = quiet_build(
        "unet", "resnet18", norm_preset(name), decoder={"decoder_channels": [32, 16, 16, 8, 8]}
    )
    model.train()  # train mode: where BatchNorm would mix the batch
    x = torch.randn(4, 4, 64, 64) * 100 + 1000
    with torch.no_grad():
        alone, together = model(x[:1]), model(x)[:1]
    assert torch.allclose(alone, together, atol=1e-5 * float(together.abs().max()) + 1e-5)  # float32 rounding
