"""The optimizer over parameter groups: no weight decay on norm parameters and biases by default.

Decaying γ/β pulls normalisation scales towards zero and biases towards the origin, which only
adds noise to what the norm ablation measures; most segmentation recipes exclude them.

``optim.scale_lr`` scales the configured LR with the effective batch (per-GPU batch × ranks ×
accumulation) against ``optim.base_batch_size``: ``linear`` is Goyal et al. (2017)'s rule, which the
norm ablation uses so that every batch size trains at a comparable LR.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from geoseg.config import is_real
from geoseg.errors import GeosegError, first_line
from geoseg.models.convert import is_norm

SCALE_RULES = {"none": lambda ratio: 1.0, "linear": lambda ratio: ratio, "sqrt": lambda ratio: ratio**0.5}


def param_groups(
    model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False, split_encoder: bool = False
) -> list[dict]:
    """Trainable parameters split into a decayed group and, unless asked otherwise, a no-decay group.

    With ``split_encoder`` the encoder's parameters form their own two groups, after the others and
    marked ``"encoder": True`` (for ``encoder.lr_mult`` and ``encoder.freeze_epochs``).
    """
    norm_params = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters(recurse=False)}
    encoder = {id(p) for p in encoder_parameters(model)} if split_encoder else set()
    lists: dict[tuple[bool, bool], list] = {(e, d): [] for e in (False, True) for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = id(p) in norm_params or name.endswith(".bias") or p.ndim <= 1
        lists[(id(p) in encoder, not (exempt and not decay_norm_and_bias))].append(p)
    groups = [
        {"params": params, "weight_decay": weight_decay if decay else 0.0}
        | ({"encoder": True} if enc else {})
        for (enc, decay), params in lists.items()
    ]
    return [g for g in groups if g["params"]]


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the model's encoder (``model.net.encoder`` of a geoseg model, else ``.encoder``)."""
    net = getattr(model, "net", model)
    encoder = getattr(net, "encoder", None)
    if encoder is None:
        raise GeosegError("encoder.lr_mult / encoder.freeze_epochs: this model has no encoder module")
    return list(encoder.parameters())


def scaled_lr(optim_cfg: Mapping[str, Any], effective_batch: int) -> float | None:
    """The LR for ``effective_batch`` under ``optim.scale_lr`` (None when the optimizer sets no ``lr``)."""
    lr = optim_cfg["optimizer"].get("lr")
    if lr is not None and not is_real(lr):
        raise GeosegError(f"optim.optimizer.lr={lr!r} must be a number, e.g. optim.optimizer.lr=1e-3")
    rule = str(optim_cfg.get("scale_lr", "none"))
    if rule not in SCALE_RULES:
        raise GeosegError(f"optim.scale_lr={rule!r} is not one of {', '.join(SCALE_RULES)}")
    if lr is None or rule == "none":
        return None if lr is None else float(lr)
    base = optim_cfg.get("base_batch_size")
    if not isinstance(base, int) or isinstance(base, bool) or base < 1:
        raise GeosegError(
            f"optim.base_batch_size={base!r} must be a whole number >= 1 with optim.scale_lr={rule}"
        )
    return float(lr) * SCALE_RULES[rule](effective_batch / base)


def build_optimizer(
    optim_cfg: Mapping[str, Any],
    model: nn.Module,
    effective_batch: int | None = None,
    encoder_lr_mult: float = 1.0,
    split_encoder: bool = False,
) -> torch.optim.Optimizer:
    """The configured optimizer (``optim.optimizer``, a ``_partial_``) over :func:`param_groups`.

    With ``effective_batch`` the LR follows ``optim.scale_lr``; without it, the configured LR is used.
    The encoder's groups get ``encoder_lr_mult`` times the LR (and their own groups whenever
    ``split_encoder``, which a frozen start needs).
    """
    factory: Callable[..., torch.optim.Optimizer] = instantiate(optim_cfg["optimizer"])
    keywords = dict(getattr(factory, "keywords", {}))
    weight_decay = keywords.get("weight_decay", 0.0)
    if not is_real(weight_decay):
        raise GeosegError(f"optim.optimizer.weight_decay={weight_decay!r} must be a number, e.g. 1e-4")
    if not is_real(encoder_lr_mult) or encoder_lr_mult < 0:
        raise GeosegError(
            f"encoder.lr_mult={encoder_lr_mult!r} must be a number >= 0 (1: the optimizer's LR)"
        )
    split = split_encoder or encoder_lr_mult != 1
    groups = param_groups(model, weight_decay, bool(optim_cfg.get("decay_norm_and_bias", False)), split)
    lr = scaled_lr(optim_cfg, effective_batch) if effective_batch is not None else None
    if encoder_lr_mult != 1:
        base = lr if lr is not None else keywords.get("lr")
        if base is None:
            raise GeosegError("encoder.lr_mult needs optim.optimizer.lr to be set (the LR it multiplies)")
        for group in groups:
            if group.get("encoder"):
                group["lr"] = float(base) * float(encoder_lr_mult)
    try:
        return factory(groups, lr=lr) if lr is not None else factory(groups)
    except (ValueError, TypeError) as err:  # torch's own checks: "Invalid learning rate: -1.0", ...
        name = getattr(getattr(factory, "func", factory), "__name__", "the optimizer")
        message = f"optim.optimizer ({name}): {first_line(err)}; fix it in optim.optimizer.*"
        raise GeosegError(message) from None
