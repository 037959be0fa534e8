"""Optimizer parameter groups: norm parameters and biases get no weight decay unless asked."""

from __future__ import annotations

import functools

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from geoseg.config import config_dir
from geoseg.engine.optim import build_optimizer, param_groups, scaled_lr
from geoseg.errors import GeosegError
from geoseg.models import build_model
from geoseg.models.norms import GroupNorm


def tiny_model() -> nn.Module:
    norm = functools.partial(GroupNorm, num_groups=8)
    return build_model("unet", "resnet18", 4, 3, norm, decoder={"decoder_channels": [32, 16, 16, 8, 8]})


def test_norm_and_bias_parameters_are_not_decayed():
    model = tiny_model()
    decay, no_decay = param_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert all(id(m.weight) in ids and id(m.bias) in ids for m in norms)
    assert id(model.net.segmentation_head[0].bias) in ids
    assert id(model.net.segmentation_head[0].weight) not in ids
    assert all(p.ndim == 4 for p in decay["params"])  # only conv kernels are decayed here
    total = sum(len(g["params"]) for g in (decay, no_decay))
    assert total == len([p for p in model.parameters() if p.requires_grad])


def test_decay_norm_and_bias_puts_everything_in_one_group():
    groups = param_groups(tiny_model(), weight_decay=0.05, decay_norm_and_bias=True)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.05


def test_frozen_parameters_are_left_out():
    model = tiny_model()
    model.net.encoder.requires_grad_(False)
    ids = {id(p) for g in param_groups(model, 0.01) for p in g["params"]}
    assert not any(id(p) in ids for p in model.net.encoder.parameters())


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizers_from_config_use_the_groups_and_a_step_leaves_norm_weights_undecayed(name):
    cfg = OmegaConf.load(config_dir() / "optim" / f"{name}.yaml")
    cfg.optimizer.weight_decay = 0.5
    model = tiny_model()
    opt = build_optimizer(cfg, model)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    gn = model.net.encoder.bn1  # a GroupNorm now
    conv = model.net.encoder.conv1.weight
    gn_before, conv_before = gn.weight.detach().clone(), conv.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(gn.weight, gn_before)  # zero gradient and no decay: unchanged
    assert torch.all(conv.abs() < conv_before.abs())  # zero gradient, decayed: shrunk


@pytest.mark.parametrize(
    ("rule", "batch", "expected"),
    [("none", 32, 1e-3), ("linear", 2, 2.5e-4), ("linear", 32, 4e-3), ("sqrt", 32, 2e-3), ("sqrt", 8, 1e-3)],
)
def test_lr_scales_with_the_effective_batch(rule, batch, expected):
    cfg = OmegaConf.load(config_dir() / "optim" / "adamw.yaml")
    cfg.scale_lr, cfg.base_batch_size = rule, 8
    opt = build_optimizer(cfg, tiny_model(), effective_batch=batch)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected, expected])
    assert opt.defaults["lr"] == pytest.approx(expected)
    assert scaled_lr(cfg, batch) == pytest.approx(expected)


def test_shipped_optimizers_do_not_scale_the_lr_by_default():
    for name in ("adamw", "sgd"):
        cfg = OmegaConf.load(config_dir() / "optim" / f"{name}.yaml")
        assert build_optimizer(cfg, tiny_model(), 64).defaults["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize(
    ("rule", "base", "message"),
    [("cubic", 8, "optim.scale_lr='cubic' is not one of none, linear, sqrt"),
     ("linear", 0, "optim.base_batch_size=0 must be a whole number >= 1 with optim.scale_lr=linear")],
)  # fmt: skip
def test_bad_lr_scaling_options_name_the_option(rule, base, message):
    cfg = OmegaConf.load(config_dir() / "optim" / "adamw.yaml")
    cfg.scale_lr, cfg.base_batch_size = rule, base
    with pytest.raises(GeosegError) as err:
        build_optimizer(cfg, tiny_model(), 8)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("name", "option", "value", "refusal"),
    [("adamw", "lr", -1.0, "AdamW): Invalid learning rate: -1.0"),
     ("adamw", "betas", [0.9, 2.0], "AdamW): Invalid beta parameter at index 1: 2.0"),
     ("sgd", "momentum", -1, "SGD): Invalid momentum value: -1")],
)  # fmt: skip
def test_an_option_the_optimizer_refuses_is_one_line_naming_it(name, option, value, refusal):
    cfg = OmegaConf.load(config_dir() / "optim" / f"{name}.yaml")
    cfg.optimizer[option] = value
    with pytest.raises(GeosegError) as err:
        build_optimizer(cfg, tiny_model(), 8)
    assert str(err.value) == f"optim.optimizer ({refusal}; fix it in optim.optimizer.*"
