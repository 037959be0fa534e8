"""The norm layer as a whole-model choice: every arch × norm builds, trains a step, and has only that norm."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from geoseg.errors import GeosegError
from geoseg.models import build_model, convert_norm, norm_counts
from geoseg.models.norms import GroupNorm, InstanceNorm2d, LayerNorm2d, group_count, norm_preset

NORMS = [
    "batchnorm", "syncbatchnorm", "groupnorm", "groupnorm_ws", "frn", "instancenorm", "layernorm",
    "frozenbatchnorm", "identity",
]  # fmt: skip
ARCHS = ["unet", "fpn", "deeplabv3plus", "unetplusplus"]
# tiny decoders: each width is a multiple of 8 so GroupNorm(8) divides it
TINY = {
    "unet": {"decoder_channels": [32, 16, 16, 8, 8]},
    "unetplusplus": {"decoder_channels": [32, 16, 16, 8, 8]},
    "fpn": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    "deeplabv3plus": {"decoder_channels": 32},
}
EXPECTED = {
    "batchnorm": {"BatchNorm2d"},
    "syncbatchnorm": {"BatchNorm2d"},  # no process group here: falls back to BatchNorm
    "groupnorm": {"GroupNorm"},
    "groupnorm_ws": {"GroupNormWS"},
    "frn": {"FilterResponseNorm2d"},
    "instancenorm": {"InstanceNorm2d"},
    "layernorm": {"LayerNorm2d"},
    "frozenbatchnorm": {"FrozenBatchNorm2d"},
    "identity": set(),
}


def norm_from_config(name: str):
    """The shipped norm factory (GroupNorm with 8 groups, to divide the tiny decoders' widths)."""
    return norm_preset(name, **({"num_groups": 8} if name == "groupnorm" else {}))


def build(arch: str, norm, encoder: str = "resnet18", bands: int = 4):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(arch, encoder, bands, 3, norm, decoder=TINY[arch])


@pytest.mark.parametrize("norm_name", NORMS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_and_norm_trains_a_step_with_only_that_norm(arch, norm_name):
    torch.manual_seed(0)
    model = build(arch, norm_from_config(norm_name))
    assert set(norm_counts(model)) == EXPECTED[norm_name]
    summary = model.meta["norm_summary"]
    assert summary["after"] == norm_counts(model)
    assert sum(summary["before"].values()) == summary["replaced"] > 0
    model.train()
    x = torch.randn(2, 4, 64, 64)
    out = model(x)
    assert out.shape == (2, 3, 64, 64)
    loss = nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("norm_name", ["batchnorm", "groupnorm", "layernorm", "identity"])
def test_timm_encoder_norm_act_layers_are_replaced_and_keep_their_activation(norm_name):
    model = build("unet", norm_from_config(norm_name), encoder="tu-efficientnet_b0")
    assert model.meta["norm_summary"]["before"]["BatchNormAct2d"] > 0
    assert set(norm_counts(model)) == EXPECTED[norm_name]
    stem = model.net.encoder.model.bn1  # was BatchNormAct2d(32, act=SiLU)
    assert isinstance(stem, nn.Sequential) and isinstance(stem[2], nn.SiLU)
    assert model(torch.randn(2, 4, 64, 64)).shape == (2, 3, 64, 64)


def test_fpn_hard_coded_groupnorm_is_replaced():
    model = build("fpn", functools.partial(nn.BatchNorm2d))
    assert model.meta["norm_summary"]["before"]["GroupNorm"] > 0
    assert norm_counts(model) == {"BatchNorm2d": sum(model.meta["norm_summary"]["before"].values())}


def test_affine_parameters_are_copied_when_shapes_match():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    with torch.no_grad():
        net[1].weight.copy_(torch.arange(8.0))
        net[1].bias.fill_(0.5)
        net[1].running_mean.fill_(3.0)
    summary = convert_norm(net, functools.partial(GroupNorm, num_groups=4))
    assert isinstance(net[1], nn.GroupNorm) and net[1].num_groups == 4
    assert torch.equal(net[1].weight, torch.arange(8.0)) and torch.all(net[1].bias == 0.5)
    assert summary.dropped_running_stats == ["1"]
    net2 = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    with torch.no_grad():
        net2[1].running_mean.fill_(3.0)
    assert convert_norm(net2, FrozenBatchNorm2d).dropped_running_stats == []
    assert torch.all(net2[1].running_mean == 3.0)


@pytest.mark.parametrize(
    ("channels", "groups", "expected"),
    [(64, 32, 32), (48, 32, 24), (20, 32, 20), (40, 16, 10), (7, 32, 7), (30, 4, 3)],
)
def test_divisor_policy_picks_the_largest_divisor_not_above_num_groups(channels, groups, expected):
    assert group_count(channels, groups, "divisor") == expected
    assert GroupNorm(channels, num_groups=groups).num_groups == expected


def test_strict_policy_names_the_layer_and_its_channels():
    net = nn.Sequential(nn.Conv2d(3, 64, 1), nn.BatchNorm2d(64), nn.Conv2d(64, 48, 1), nn.BatchNorm2d(48))
    with pytest.raises(GeosegError, match=r"norm layer '3': norm.num_groups=32 does not divide 48 channels"):
        convert_norm(net, functools.partial(GroupNorm, num_groups=32, group_policy="strict"))
    with pytest.raises(GeosegError, match="group_policy"):
        group_count(48, 32, "nearest")


def test_layernorm_normalises_each_pixel_over_channels():
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    y = LayerNorm2d(6)(x)
    assert torch.allclose(y.mean(dim=1), torch.zeros(2, 5, 7), atol=1e-5)
    assert torch.allclose(y.var(dim=1, correction=0), torch.ones(2, 5, 7), atol=1e-3)
    # and not over the image width, which is what nn.LayerNorm(C) would need an NHWC input for
    ref = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,)).permute(0, 3, 1, 2)
    assert torch.allclose(y, ref, atol=1e-6)


def test_instancenorm_accepts_one_pixel_maps_and_returns_its_bias():
    norm = InstanceNorm2d(4)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    pixel = torch.randn(3, 4, 1, 1, requires_grad=True)
    out = norm(pixel)
    assert torch.equal(out[:, :, 0, 0], torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 3))
    out.sum().backward()  # every input gets a (zero) gradient, so DDP counts all parameters as used
    assert torch.equal(pixel.grad, torch.zeros_like(pixel)) and torch.equal(norm.weight.grad, torch.zeros(4))
    x = torch.randn(2, 4, 8, 8)
    reference = nn.functional.instance_norm(x, weight=norm.weight, bias=norm.bias)
    assert torch.allclose(norm(x), reference, atol=1e-6)


def test_syncbatchnorm_falls_back_to_batchnorm_with_one_warning():
    with pytest.warns(UserWarning, match="syncbatchnorm") as record:
        model = build_model("unet", "resnet18", 4, 3, norm_from_config("syncbatchnorm"), decoder=TINY["unet"])
    assert len([w for w in record if "syncbatchnorm" in str(w.message)]) == 1
    assert set(norm_counts(model)) == {"BatchNorm2d"}
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


def test_token_layernorms_are_left_alone_but_counted():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Flatten(2), nn.LayerNorm(16))
    summary = convert_norm(net, functools.partial(GroupNorm, num_groups=4))
    assert summary.before == {"BatchNorm2d": 1, "LayerNorm": 1}
    assert summary.after == {"GroupNorm": 1, "LayerNorm": 1}
    assert type(net[3]) is nn.LayerNorm
    assert net(torch.randn(2, 3, 4, 4)).shape == (2, 8, 16)


@pytest.mark.parametrize("norm_name", NORMS)
def test_every_norm_runs_under_bf16_autocast_and_channels_last(norm_name):
    """CPU stand-ins for the CUDA paths: bf16 autocast trains a step; channels_last changes no output."""
    model = build("deeplabv3plus", norm_from_config(norm_name))  # its ASPP pooling is a 1×1 map
    x = torch.randn(2, 4, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = nn.functional.cross_entropy(out.float(), torch.randint(0, 3, (2, 64, 64)))
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        reference = model(x)
        model.to(memory_format=torch.channels_last)
        fast = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fast, reference, atol=1e-4, rtol=1e-4)


def test_an_unknown_norm_preset_lists_the_shipped_ones():
    with pytest.raises(
        GeosegError, match=r"norm='batchnrom' is not a shipped norm; choose one of auto, batchnorm, "
    ):
        norm_preset("batchnrom")
    assert norm_preset("groupnorm", num_groups=4)(12).num_groups == 4


@pytest.mark.parametrize(
    ("name", "option", "message"),
    [
        ("batchnorm", {"eps": 0}, r"^norm.eps=0 must be a positive number"),  # torch raises in forward
        ("groupnorm", {"eps": -1e-5}, r"^norm.eps=-1e-05 must be a positive number"),
        ("frn", {"eps": "abc"}, r"^norm.eps='abc' must be a positive number"),
        ("groupnorm", {"eps": float("inf")}, r"^norm.eps=inf must be a positive number"),  # x / inf = 0
        ("batchnorm", {"eps": True}, r"^norm.eps=True must be a positive number"),
        ("batchnorm", {"momentum": 1.5}, r"^norm.momentum=1.5 must be a number in \[0, 1\]"),
        ("syncbatchnorm", {"momentum": -0.1}, r"^norm.momentum=-0.1 must be a number in \[0, 1\]"),
    ],
)
def test_bad_eps_or_momentum_is_one_line_naming_the_option(name, option, message):
    with pytest.raises(GeosegError, match=message) as caught:
        build_model("unet", "resnet18", 4, 3, norm_preset(name, **option), decoder=TINY["unet"])
    assert "\n" not in str(caught.value)


def test_null_momentum_is_batchnorms_cumulative_average():
    norm = norm_preset("batchnorm", momentum=None)
    model = build_model("unet", "resnet18", 4, 3, norm, decoder=TINY["unet"])
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {None}
