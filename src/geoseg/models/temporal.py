"""Models for image time series: the series input layout, its normalisation, and two ways to fuse dates.

A series chip of T dates and C bands is one 4-D tensor (B, T*(C+1), H, W), date-major: for date t,
channels ``t*(C+1) : t*(C+1)+C`` hold its raw bands and channel ``t*(C+1)+C`` its validity (1 valid,
0 cloud, nodata or a padded date; padded dates come last). Validity above 0.5 counts as valid, so
geometric augmentation may leave it fractional. One 4-D tensor keeps the training loop, evaluation,
sliding-window prediction and export unchanged.

- :class:`SeriesNormalize` is the series model's first layer (the counterpart of ``BandNormalize``);
- early fusion is an ordinary smp model on the T*(C+1) channels (built in ``build.py``);
- attention fusion is :class:`TemporalNet`: one encoder shared by the dates and a U-TAE-like temporal
  attention that merges them before the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.config import is_whole
from geoseg.errors import GeosegError
from geoseg.models.band_normalize import BandNormalize

FUSIONS = ("early", "attention")
OPTIONS = ("dates", "fusion", "heads", "key_dim")


@dataclass(frozen=True)
class TemporalOptions:
    """How a series model is built: its number of date slots and the fusion (``temporal`` config group)."""

    dates: int
    fusion: str = "early"
    heads: int = 4  # attention fusion: heads of the temporal attention
    key_dim: int = 8  # attention fusion: size of each head's keys and master query

    @classmethod
    def from_mapping(cls, series: Mapping[str, Any]) -> TemporalOptions:
        """Checked options from ``{"dates": T, "fusion": ..., ...}``; every mistake is one line."""
        unknown = sorted(str(k) for k in series if k not in OPTIONS)
        if unknown:
            raise GeosegError(f"temporal.{unknown[0]} is not an option; the options are {', '.join(OPTIONS)}")
        fusion = series.get("fusion", "early")
        if fusion not in FUSIONS:
            raise GeosegError(f"temporal.fusion={fusion!r} is not one of {', '.join(FUSIONS)}")
        dates = series.get("dates")
        if not is_whole(dates) or dates < 1:
            raise GeosegError(f"a series model needs a whole number of dates >= 1 (got {dates!r})")
        sizes = {k: series.get(k, getattr(cls, k)) for k in ("heads", "key_dim")}
        for key, value in sizes.items():
            if not is_whole(value) or value < 1:
                raise GeosegError(
                    f"temporal.{key}={value!r} must be a whole number >= 1, e.g. temporal.{key}=4"
                )
        return cls(int(dates), str(fusion), int(sizes["heads"]), int(sizes["key_dim"]))

    def as_dict(self) -> dict[str, Any]:
        """The options that shape the model (early fusion has no heads), as ``meta["series"]`` keeps them."""
        out = asdict(self)
        if self.fusion == "early":
            del out["heads"], out["key_dim"]
        return out


def series_channels(dates: int, bands: int) -> int:
    """Input channels of a series of ``dates`` dates and ``bands`` bands: T*(C+1)."""
    return dates * (bands + 1)


def split_series(x: torch.Tensor, dates: int) -> torch.Tensor:
    """View (..., T*(C+1), H, W) as (..., T, C+1, H, W)."""
    return x.reshape(*x.shape[:-3], dates, x.shape[-3] // dates, *x.shape[-2:])


def date_validity(x: torch.Tensor, dates: int) -> torch.Tensor:
    """The (..., T, H, W) bool validity of a flat series tensor (validity > 0.5)."""
    return split_series(x, dates)[..., -1, :, :] > 0.5


class SeriesNormalize(BandNormalize):
    """Raw series in, float series out: bands ``(x - mean) * scale``, zeroed where their date is invalid,
    and validity as 0/1. ``mean``/``std`` are per band (length C) and shared by the dates."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], dates: int) -> None:
        super().__init__(mean, std)
        self.dates = int(dates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = series_channels(self.dates, self.num_bands)
        if x.ndim < 3 or x.shape[-3] != expected:
            raise GeosegError(
                f"the input has {x.shape[-3] if x.ndim >= 3 else 0} channels but the series model takes "
                f"{self.dates} dates × ({self.num_bands} bands + 1 validity) = {expected}"
            )
        series = split_series(x, self.dates)
        valid = (series[..., -1:, :, :] > 0.5).float()
        bands = (series[..., :-1, :, :].float() - self.mean) * self.scale * valid
        return torch.cat([bands, valid], dim=-3).reshape(x.shape)


def pooled_validity(valid: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, T, H, W) validity as float at ``size``: a coarse pixel is valid when any of its pixels is."""
    valid = valid.float()
    h, w = int(size[0]), int(size[1])
    if tuple(valid.shape[-2:]) == (h, w):
        return valid
    if valid.shape[-2] % h == 0 and valid.shape[-1] % w == 0:
        kernel = (valid.shape[-2] // h, valid.shape[-1] // w)
        return F.max_pool2d(valid, kernel, kernel)
    return F.adaptive_max_pool2d(valid, (h, w))


class TemporalAttention(nn.Module):
    """L-TAE-style attention maps over dates: per head, a learned master query against keys from a 1×1
    conv of each date's features plus a learned embedding of the date's slot; masked where invalid.

    It has no norm layer, so it computes the same way whatever norm the encoder and decoder use.
    """

    def __init__(self, channels: int, dates: int, heads: int = 4, key_dim: int = 8) -> None:
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.key = nn.Conv2d(channels, heads * key_dim, kernel_size=1)
        self.date_embedding = nn.Parameter(torch.randn(dates, heads * key_dim))  # as nn.Embedding's init
        self.query = nn.Parameter(torch.randn(heads, key_dim) * (2 / key_dim) ** 0.5)  # as L-TAE's init

    def forward(self, features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, T, D, h, w) features and (B, T, h, w) validity -> (B, T, heads, h, w) weights that sum
        to 1 over the valid dates of a pixel (all 0 where no date is valid)."""
        b, t, d, h, w = features.shape
        keys = self.key(features.reshape(b * t, d, h, w)).reshape(b, t, self.heads, self.key_dim, h, w)
        keys = keys.float() + self.date_embedding.view(1, t, self.heads, self.key_dim, 1, 1)
        scores = torch.einsum("btnkhw,nk->btnhw", keys, self.query.float()) / math.sqrt(self.key_dim)
        mask = valid[:, :, None] > 0.5
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return renormalise(torch.softmax(scores, dim=1), valid)


def renormalise(weights: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, heads, h, w) weights times (B, T, h, w) validity, summing to 1 over T (0 with no valid date)."""
    weights = weights * valid[:, :, None].to(weights.dtype)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)


def fuse(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over dates of (B, T, C, H, W) features with (B, T, heads, H, W) weights: channels
    split into head groups, or every channel by the heads' mean when ``heads`` does not divide C."""
    b, t, c, h, w = features.shape
    heads = weights.shape[2]
    if c % heads:
        return (features * weights.mean(dim=2, keepdim=True).to(features.dtype)).sum(dim=1)
    grouped = features.reshape(b, t, heads, c // heads, h, w)
    return (grouped * weights[:, :, :, None].to(features.dtype)).sum(dim=1).reshape(b, c, h, w)


class TemporalNet(nn.Module):
    """Attention fusion: a U-TAE-like network around an smp model's encoder, decoder and head.

    After Garnot & Landrieu, "Panoptic Segmentation of Satellite Image Time Series with Convolutional
    Temporal Attention Networks" (ICCV 2021). Followed: one encoder shared by all dates; an L-TAE
    (multi-head attention with a learned master query per head) at the deepest level only; its
    attention maps upsampled bilinearly to every skip level, each head weighting its group of channels
    over time; then an ordinary decoder. Simplified or changed:

    - the keys are a 1×1 conv of the features plus a learned embedding of the date's slot index: U-TAE
      encodes the day of year, and the series tensor carries only the dates' order;
    - the attention output at the deepest level is the same head-group weighting as at the skips (no
      MLP on the values), and the attention has no norm layer (so it behaves alike under every norm);
    - masks are per pixel, not only per padded date: a date counts at a coarse pixel when any of its
      pixels is valid there, and at every level the weights are masked and renormalised over the dates
      (a pixel with no valid date gets zeros);
    - a level whose channel count the heads do not divide is weighted by the heads' mean map;
    - the decoder is smp's (U-Net, FPN, ...), not U-TAE's own.

    In training mode only the date-chips with a valid pixel enter the encoder (one batch of at most
    B*T chips), so padded or fully masked dates never reach BatchNorm statistics; in eval mode every
    date-chip runs (static shapes for export) and the absent ones are zeroed, which is the same result.
    """

    def __init__(self, net: nn.Module, bands: int, dates: int, heads: int = 4, key_dim: int = 8) -> None:
        super().__init__()
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.segmentation_head = net.segmentation_head
        self.bands, self.dates = bands, dates
        deepest = int(self.encoder.out_channels[-1])
        self.attention = TemporalAttention(deepest, dates, heads, key_dim)

    def encode(self, chips: torch.Tensor, present: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features (B, T, C_l, H_l, W_l) of (B, T, C, H, W) chips, zero for absent date-chips."""
        b, t = chips.shape[:2]
        flat, keep = chips.reshape(b * t, *chips.shape[2:]), present.reshape(b * t)
        if not self.training or not bool(keep.any()):  # eval, or nothing valid: every chip runs
            feats = self.encoder(flat)
            return [(f * keep.view(-1, 1, 1, 1).to(f.dtype)).reshape(b, t, *f.shape[1:]) for f in feats]
        index = keep.nonzero().squeeze(1)
        out = []
        for f in self.encoder(flat.index_select(0, index)):
            full = f.new_zeros(b * t, *f.shape[1:]).index_copy(0, index, f)
            out.append(full.reshape(b, t, *f.shape[1:]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        series = split_series(x, self.dates)
        chips, valid = series[:, :, : self.bands], series[:, :, self.bands] > 0.5
        present = valid.flatten(2).any(dim=2)
        features = self.encode(chips, present)
        deepest = features[-1]
        weights = self.attention(deepest, pooled_validity(valid, deepest.shape[-2:]))
        b, t, heads, h, w = weights.shape
        fused = []
        for f in features:
            size = tuple(f.shape[-2:])
            level = weights
            if size != (h, w):
                level = F.interpolate(weights.reshape(b, t * heads, h, w), size=size, mode="bilinear",
                                      align_corners=False).reshape(b, t, heads, *size)  # fmt: skip
            fused.append(fuse(f, renormalise(level, pooled_validity(valid, size))))
        return self.segmentation_head(self.decoder(fused))
