"""The optimizer over parameter groups: no weight decay on norm parameters and biases by default.

Decaying γ/β pulls normalisation scales towards zero and biases towards the origin, which only
adds noise to what the norm ablation measures; most segmentation recipes exclude them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from geoseg.models.convert import is_norm


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """Trainable parameters split into a decayed group and, unless asked otherwise, a no-decay group."""
    norm_params = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = id(p) in norm_params or name.endswith(".bias") or p.ndim <= 1
        (no_decay if exempt and not decay_norm_and_bias else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(optim_cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer (``optim.optimizer``, a ``_partial_``) over :func:`param_groups`."""
    factory: Callable[..., torch.optim.Optimizer] = instantiate(optim_cfg["optimizer"])
    weight_decay = float(getattr(factory, "keywords", {}).get("weight_decay", 0.0))
    groups = param_groups(model, weight_decay, bool(optim_cfg.get("decay_norm_and_bias", False)))
    return factory(groups)
