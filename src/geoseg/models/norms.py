"""Norm-layer factories, each called as ``norm(num_channels)`` (the torchvision/timm ``norm_layer`` rule).

``configs/norm/*.yaml`` instantiates one of these (or a torch class) with ``_partial_: true``.
The classes here exist where torch's own does not fit that rule or is wrong on conv features:

- :class:`GroupNorm` takes the channel count first and picks the group count from it (at least 16
  channels per group, at most 32 groups) or from a fixed ``num_groups``;
- :class:`LayerNorm2d` normalises each pixel over its channels (``nn.LayerNorm`` on an NCHW
  tensor would normalise over the last dimension, the image width);
- :class:`InstanceNorm2d` keeps working on 1×1 maps (DeepLabV3+'s image-pooling branch), where
  torch raises.

:func:`resolve_norm` checks ``eps`` and ``momentum`` (one line naming the option) and turns a
``syncbatchnorm`` choice into plain BatchNorm when there is no process group on a GPU to synchronise over.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from geoseg.config import config_dir, is_real, is_whole
from geoseg.errors import GeosegError

NormFactory = Callable[[int], nn.Module]
GROUP_POLICIES = ("divisor", "strict")


def group_count(num_channels: int, num_groups: int, policy: str = "divisor") -> int:
    """Groups for ``num_channels``: ``num_groups`` itself, or under ``divisor`` its largest divisor ≤ it."""
    if policy not in GROUP_POLICIES:
        raise GeosegError(f"norm.group_policy={policy!r} is not one of {', '.join(GROUP_POLICIES)}")
    if not is_whole(num_groups) or num_groups < 1:
        raise GeosegError(f"norm.num_groups={num_groups!r} must be a whole number >= 1, e.g. 32")
    if num_channels % num_groups == 0:
        return num_groups
    if policy == "strict":
        raise GeosegError(
            f"norm.num_groups={num_groups} does not divide {num_channels} channels; "
            "pick a num_groups that does or set norm.group_policy=divisor"
        )
    return max(g for g in range(1, min(num_groups, num_channels) + 1) if num_channels % g == 0)


def groups_from_channels(num_channels: int, channels_per_group: int = 16, max_groups: int = 32) -> int:
    """Groups of at least ``channels_per_group`` channels, at most ``max_groups``, dividing the channels.

    16 channels give 1 group of 16 (never 16 groups of 1, which is InstanceNorm), 64 give 4 of 16,
    512 and wider Wu & He's 32. A layer narrower than ``channels_per_group`` gets one group of all
    its channels (its width forces fewer per group). The count is the largest divisor of the
    channels not above ``min(max_groups, channels // channels_per_group)``.
    """
    for name, value in (("norm.channels_per_group", channels_per_group), ("norm.max_groups", max_groups)):
        if not is_whole(value) or value < 1:
            raise GeosegError(f"{name}={value!r} must be a whole number >= 1 (defaults: 16 and 32)")
    cap = max(1, min(max_groups, num_channels // channels_per_group))
    return max(g for g in range(1, cap + 1) if num_channels % g == 0)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` built from the channel count.

    By default the group count follows the channels (:func:`groups_from_channels`: at least
    ``channels_per_group`` per group, at most ``max_groups`` groups). A fixed ``num_groups`` (the
    rule of geoseg 0.1, which checkpoints of that time carry in their config) is used as given, or
    under ``group_policy=divisor`` its largest divisor of the channels.
    """

    def __init__(
        self,
        num_channels: int,
        num_groups: int | None = None,
        group_policy: str = "divisor",
        eps: float = 1e-5,
        affine: bool = True,
        channels_per_group: int = 16,
        max_groups: int = 32,
    ) -> None:
        if num_groups is None:
            groups = groups_from_channels(num_channels, channels_per_group, max_groups)
        else:
            groups = group_count(num_channels, num_groups, group_policy)
        super().__init__(groups, num_channels, eps=eps, affine=affine)


class GroupNormWS(GroupNorm):
    """GroupNorm whose choice also turns the convolutions feeding it into weight-standardised ones
    (``norm=groupnorm_ws``; :func:`geoseg.models.build.build_model` does the conversion)."""

    weight_standardization = True


class FilterResponseNorm2d(nn.Module):
    """Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan, CVPR 2020).

    Per sample and channel, with ν² the mean of x² over the pixels:
    ``y = max(γ · x / sqrt(ν² + ε) + β, τ)``. No batch statistics and no mean subtraction, so it
    behaves the same at batch 1; the learned threshold τ (the TLU) takes the place of the centring.
    Computed in float32 under autocast. γ and β are named ``weight`` and ``bias`` (BatchNorm's γ/β
    are copied into them by the norm conversion).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.tau = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        xf = x.float()
        nu2 = xf.pow(2).mean(dim=(2, 3), keepdim=True)
        y = xf * torch.rsqrt(nu2 + self.eps) * self.weight.view(shape) + self.bias.view(shape)
        return torch.maximum(y, self.tau.view(shape)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}"


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an NCHW tensor (the ConvNeXt convention)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class InstanceNorm2d(nn.InstanceNorm2d):
    """Affine InstanceNorm without running statistics that also accepts 1×1 maps.

    One pixel normalises to exactly 0, so a 1×1 map becomes the bias β. That is the definition;
    torch raises instead, which would make DeepLabV3+ unusable with this norm. The result stays
    in the autograd graph (with zero gradients), so DDP sees every parameter used.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_channels, eps=eps, affine=affine, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] * x.shape[-2] > 1:
            return super().forward(x)
        out = x - x  # exactly 0 with a zero gradient, but still connected to the input
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def norm_preset(name: str, **overrides: object) -> NormFactory:
    """The factory of the shipped ``configs/norm/<name>.yaml``, with ``overrides`` applied."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = config_dir() / "norm" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise GeosegError(f"norm={name!r} is not a shipped norm; choose one of {', '.join(names)}")
    return instantiate(OmegaConf.merge(OmegaConf.load(path), overrides))


def factory_target(norm: NormFactory) -> object:
    """The class or function a (possibly ``functools.partial``) norm factory builds with."""
    return norm.func if isinstance(norm, functools.partial) else norm


def norm_name(norm: NormFactory) -> str:
    """A short name of the factory's target, e.g. ``GroupNorm`` or ``FrozenBatchNorm2d``."""
    target = factory_target(norm)
    return getattr(target, "__name__", type(target).__name__)


def sync_available() -> bool:
    """Whether SyncBatchNorm can synchronise: an initialised process group and a CUDA device."""
    return dist.is_available() and dist.is_initialized() and torch.cuda.is_available()


def check_norm_options(norm: NormFactory) -> None:
    """``norm.eps`` must be a positive number and ``norm.momentum`` one in [0, 1] (or null, BatchNorm's
    cumulative average): torch raises deep inside the first forward pass, or divides by zero, otherwise."""
    kwargs = norm.keywords if isinstance(norm, functools.partial) else {}
    eps, momentum = kwargs.get("eps", 1.0), kwargs.get("momentum")
    if not is_real(eps) or not eps > 0:
        raise GeosegError(f"norm.eps={eps!r} must be a positive number, e.g. norm.eps=1e-5")
    if momentum is not None and not (is_real(momentum) and 0 <= momentum <= 1):
        raise GeosegError(
            f"norm.momentum={momentum!r} must be a number in [0, 1] (0.1 is torch's default) or null "
            "for a cumulative average"
        )


def resolve_norm(norm: NormFactory) -> NormFactory:
    """``norm`` checked (:func:`check_norm_options`), except SyncBatchNorm without a GPU process group,
    which becomes BatchNorm."""
    check_norm_options(norm)
    if factory_target(norm) is not nn.SyncBatchNorm or sync_available():
        return norm
    warnings.warn(
        "norm=syncbatchnorm needs an initialised process group on CUDA devices (a torchrun/SLURM run "
        "on GPUs); using BatchNorm2d, which normalises over each process's own batch",
        UserWarning,
        stacklevel=2,
    )
    kwargs = dict(norm.keywords) if isinstance(norm, functools.partial) else {}
    kwargs.pop("process_group", None)
    return functools.partial(nn.BatchNorm2d, **kwargs)
