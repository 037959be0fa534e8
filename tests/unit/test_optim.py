"""Optimizer parameter groups: norm parameters and biases get no weight decay unless asked."""

from __future__ import annotations

import functools

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from geoseg.config import config_dir
from geoseg.engine.optim import build_optimizer, param_groups
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
