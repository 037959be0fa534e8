"""Weight Standardization (Qiao et al. 2019): convolutions whose filters are standardised in the forward pass.

With GroupNorm (``norm=groupnorm_ws``) it matches large-batch BatchNorm at 1–2 images per GPU in
the paper's segmentation results. :func:`standardize_convs` converts the convolutions whose output
feeds a norm layer, found by following one forward pass (so it works for any encoder and decoder):
each becomes a :class:`WSConv2d` holding the same ``weight`` parameter, so plain state dicts
(pretrained encoders, geoseg checkpoints) load into it unchanged and are standardised when used.
"""

from __future__ import annotations

import torch
from torch import nn

from geoseg.models.convert import is_feature_norm

EPS = 1e-5


def standardize(weight: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Each output filter of ``weight`` (out, in, kh, kw) shifted to mean 0 and scaled to variance 1."""
    w = weight.float()
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    return ((w - mean) * torch.rsqrt(var + eps)).to(weight.dtype)


class WSConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with :func:`standardize` of its weight (same parameters and keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize(self.weight), self.bias)


def convs_feeding_norms(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the ``nn.Conv2d`` whose output is the direct input of a feature-map norm layer."""
    produced: dict[int, str] = {}  # id of a conv's output tensor -> the conv's name
    feeding: list[str] = []

    def conv_hook(name: str):
        return lambda _module, _inputs, out: produced.__setitem__(id(out), name)

    def norm_hook(_module: nn.Module, inputs: tuple) -> None:
        feeding.append(produced.get(id(inputs[0]), ""))

    hooks = []
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d:
            hooks.append(module.register_forward_hook(conv_hook(name)))
        elif is_feature_norm(module):
            hooks.append(module.register_forward_pre_hook(norm_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return sorted({n for n in feeding if n})


def standardize_convs(model: nn.Module, example: torch.Tensor) -> int:
    """Turn every conv of ``model`` that feeds a norm into a :class:`WSConv2d`, in place; returns how many."""
    names = convs_feeding_norms(model, example)
    for name in names:
        old = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        new = WSConv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                       old.dilation, old.groups, old.bias is not None, old.padding_mode,
                       device=old.weight.device, dtype=old.weight.dtype)  # fmt: skip
        new.weight, new.bias = old.weight, old.bias  # the same Parameters: state dict keys unchanged
        setattr(model.get_submodule(parent_name), child, new)
    return len(names)
