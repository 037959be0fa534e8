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


def adamw_cfg(lr: float = 1e-2) -> dict:
    return {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr, "weight_decay": 1e-4}}


def test_encoder_lr_multiplier_gives_the_encoder_its_own_groups():
    model = tiny_model()
    optimizer = build_optimizer(adamw_cfg(), model, encoder_lr_mult=0.1)
    encoder = {id(p) for p in model.net.encoder.parameters()}
    for group in optimizer.param_groups:
        inside = {id(p) in encoder for p in group["params"]}
        assert len(inside) == 1  # a group is all encoder or all not
        assert group["lr"] == pytest.approx(1e-3 if inside == {True} else 1e-2)
        assert bool(group.get("encoder")) == (inside == {True})
    assert optimizer.param_groups[0].get("encoder") is None  # the logged LR is the decoder's
    with pytest.raises(GeosegError, match=r"encoder\.lr_mult=-1 must be a number >= 0"):
        build_optimizer(adamw_cfg(), model, encoder_lr_mult=-1)


def test_a_frozen_start_keeps_the_encoder_fixed_then_trains_it():
    from geoseg.engine.schedule import build_scheduler

    torch.manual_seed(0)
    model = tiny_model()
    optimizer = build_optimizer(adamw_cfg(), model, split_encoder=True)
    scheduler = build_scheduler(optimizer, 10, "constant", encoder_frozen_steps=2)
    encoder_before = model.net.encoder.conv1.weight.detach().clone()
    decoder_before = model.net.segmentation_head[0].weight.detach().clone()
    x, y = torch.randn(2, 4, 64, 64), torch.randint(0, 3, (2, 64, 64))
    for step in range(3):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        encoder_fixed = torch.equal(model.net.encoder.conv1.weight, encoder_before)
        assert encoder_fixed == (step < 2), step  # LR 0 (and no weight decay) for 2 steps, then trained
        assert not torch.equal(model.net.segmentation_head[0].weight, decoder_before)
    state = scheduler.state_dict()  # a resumed run continues the same frozen-then-trained curve
    assert state["lr_lambdas"][-1]["frozen_steps"] == 2
