"""``build_model``: an smp model for N bands with the chosen norm everywhere and the band statistics inside.

The returned :class:`SegmentationModel` takes raw band values (any dtype) and returns class
logits. Its first layer is :class:`~geoseg.models.band_normalize.BandNormalize`, so every checkpoint
carries the statistics it was trained with, and ``model.meta`` records how it was built
(architecture, encoder, bands, norm, weights and first-conv strategy) for checkpoints and reports.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import segmentation_models_pytorch as smp
import torch
from hydra.utils import instantiate
from torch import nn

from geoseg.config import as_dict, whole
from geoseg.errors import GeosegError
from geoseg.models.auto_norm import choose_norm
from geoseg.models.band_normalize import BandNormalize, BandStatistics
from geoseg.models.convert import NormSummary, convert_norm
from geoseg.models.input_scaling import check_input_scaling, choose_scaling
from geoseg.models.norms import NormFactory, factory_target, resolve_norm
from geoseg.models.pretrained import resolve_weights
from geoseg.models.temporal import SeriesNormalize, TemporalNet, TemporalOptions, series_channels
from geoseg.models.weight_standardization import standardize_convs
from geoseg.models.weights import (
    FIRST_CONV_STRATEGIES,
    load_checkpoint_weights,
    load_encoder_weights,
    tensors_of,
)

log = logging.getLogger(__name__)


class SegmentationModel(nn.Module):
    """Band normalisation followed by an smp encoder-decoder: raw bands in, logits out."""

    def __init__(self, net: nn.Module, normalize: nn.Module, meta: dict[str, Any]) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.meta = meta

    @property
    def in_channels(self) -> int:
        return int(self.meta["in_channels"])

    @property
    def size_divisor(self) -> int:
        """Chip height and width must be multiples of this (the encoder's output stride)."""
        return int(getattr(self.net.encoder, "output_stride", 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise GeosegError(
                f"the model takes {self.input_layout()} but got {tuple(x.shape)}; {self.input_hint()}"
            )
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise GeosegError(
                f"chips of {h}×{w} px do not fit {self.meta['arch']}/{self.meta['encoder']}: height and "
                f"width must be multiples of {self.size_divisor} (set data.chip_size accordingly)"
            )
        return self.net(self.normalize(x))

    def input_layout(self) -> str:
        """The input shape this model takes, in words."""
        series = self.meta.get("series")
        if not series:
            return f"(batch, {self.in_channels} bands, H, W)"
        dates, bands = series["dates"], self.meta["bands_per_date"]
        return f"(batch, {dates} dates × ({bands} bands + 1 validity) = {self.in_channels} channels, H, W)"

    def input_hint(self) -> str:
        if self.meta.get("series"):
            return "check data.bands and the series' number of dates against the model's"
        return "check data.bands against the model's bands"


def check_arch_and_encoder(arch: str, encoder: str) -> None:
    """One-line errors for an unknown architecture or encoder name."""
    archs = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() not in archs:
        raise GeosegError(f"model.arch={arch!r} is not an smp architecture; choose one of {', '.join(archs)}")
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise GeosegError(f"encoder.name={encoder!r}: timm has no model {encoder[3:]!r}")
    elif encoder not in smp.encoders.encoders:
        raise GeosegError(
            f"encoder.name={encoder!r} is not an smp encoder; use e.g. resnet18, resnet50 or a timm "
            "model as tu-<name> (see smp.encoders.get_encoder_names())"
        )


def create_net(
    arch: str, encoder: str, in_channels: int, classes: int, depth: int, decoder: Mapping
) -> nn.Module:
    """``smp.create_model`` without downloads, with its option errors turned into one line."""
    check_arch_and_encoder(arch, encoder)
    seg_channels = int(decoder.get("decoder_segmentation_channels", 128))
    if arch.lower() == "fpn" and seg_channels % 32:
        raise GeosegError(
            f"model.decoder_segmentation_channels={seg_channels}: smp's FPN builds GroupNorm(32) there "
            "before geoseg swaps in the chosen norm, so use a multiple of 32"
        )
    try:
        return smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes,
            encoder_depth=depth, **dict(decoder),
        )  # fmt: skip
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        options = f" and model options {dict(decoder)}" if decoder else ""
        hint = "; to change architecture use model=<name> (configs/model/<name>.yaml), not model.arch="
        raise GeosegError(f"model.arch={arch} with encoder.name={encoder}{options}: {err}{hint}") from None


def band_normalize(
    stats: BandStatistics | None, in_channels: int, scaling: tuple[list, list, str] | None = None
) -> nn.Module:
    """The model's first layer: per-band standardisation (by the data statistics, or ``scaling``'s
    mean and std), or identity for inputs already normalised."""
    if stats is None:
        return nn.Identity()
    if len(stats.bands) != in_channels:
        raise GeosegError(
            f"the band statistics cover {len(stats.bands)} bands but the model has {in_channels}"
        )
    if scaling is not None:
        return BandNormalize(scaling[0], scaling[1])
    return BandNormalize(stats.mean, stats.std)


def series_normalize(stats: BandStatistics | None, bands: int, dates: int) -> SeriesNormalize:
    """A series model's first layer; without statistics it only masks (mean 0, std 1)."""
    if stats is None:
        return SeriesNormalize([0.0] * bands, [1.0] * bands, dates)
    band_normalize(stats, bands)  # the same band-count check
    return SeriesNormalize(stats.mean, stats.std, dates)


def warn_about_norm(summary: NormSummary, arch: str, pretrained: bool, weights: bool) -> None:
    """Say what a norm choice loses: pretrained statistics, γ/β, or any normalisation at all.

    ``pretrained``: encoder weights were loaded before the conversion; ``weights``: any weights
    file was given (a geoseg checkpoint loads after it).
    """
    encoder_dropped = [n for n in summary.dropped_running_stats if n.startswith("encoder.")]
    if pretrained and encoder_dropped:
        log.warning(
            "encoder.weights: the pretrained BatchNorm running statistics of %d layers are dropped by "
            "norm=%s (their γ/β are kept)", len(encoder_dropped), summary.norm,
        )  # fmt: skip
    if summary.norm == "Identity" and pretrained:
        log.warning("norm=identity drops the pretrained γ/β of %d layers", summary.replaced)
    if summary.norm == "InstanceNorm2d" and arch.lower().startswith("deeplabv3"):
        log.warning(
            "norm=instancenorm: DeepLabV3's image-pooling branch is a 1×1 map, normalised to a constant"
        )
    if summary.norm == "FrozenBatchNorm2d" and not weights:
        warnings.warn(
            "norm=frozenbatchnorm without encoder.weights freezes every norm at mean 0, var 1, γ 1, β 0 "
            "(no normalisation); load pretrained weights or pick another norm",
            UserWarning,
            stacklevel=3,
        )


def build_model(
    arch: str,
    encoder: str,
    in_channels: int,
    classes: int,
    norm: NormFactory,
    *,
    encoder_depth: int = 5,
    decoder: Mapping[str, Any] | None = None,
    weights: str | None = None,
    first_conv: str = "auto",
    rgb_channels: Sequence[int] | None = None,
    stats: BandStatistics | None = None,
    series: Mapping[str, Any] | None = None,
    band_names: Sequence[str | None] | None = None,
    input_scaling: str = "auto",
    weights_bands: Sequence[str] | None = None,
) -> SegmentationModel:
    """Build ``arch`` on ``encoder`` for ``in_channels`` bands, load pretrained weights, convert its norms.

    ``weights`` is anything :func:`~geoseg.models.pretrained.resolve_weights` takes (a hub name, a
    ``torchgeo:`` name, a URL, a file, a geoseg checkpoint). ``band_names`` (the data's, one per band)
    map the first convolution by name (``first_conv=auto``) and choose the ``input_scaling``;
    ``weights_bands`` names the bands of a weights file that does not say (a state dict).

    ``series`` (``{"dates": T, "fusion": "early" | "attention", "heads": ..., "key_dim": ...}``, see
    :class:`~geoseg.models.temporal.TemporalOptions`) builds a model for a series of T dates of
    ``in_channels`` bands each, which takes T*(in_channels+1) channels (bands and validity per date).
    Early fusion feeds them all to one smp model (``encoder.weights`` then adapts the first conv to
    T*(C+1) channels with ``encoder.first_conv``, and ``rgb_channels`` are positions among them);
    attention fusion shares one encoder of ``in_channels`` bands between the dates.
    """
    if in_channels < 1 or classes < 1:
        raise GeosegError(f"a model needs at least 1 band and 1 class (got {in_channels} and {classes})")
    if first_conv not in FIRST_CONV_STRATEGIES:  # checked with or without weights: a typo is a typo
        raise GeosegError(
            f"encoder.first_conv={first_conv!r} is not one of {', '.join(FIRST_CONV_STRATEGIES)}"
        )
    check_input_scaling(input_scaling)
    names = list(band_names) if band_names is not None and len(band_names) == in_channels else None
    opts = TemporalOptions.from_mapping(series) if series is not None else None
    total = series_channels(opts.dates, in_channels) if opts else in_channels
    attention = opts is not None and opts.fusion == "attention"
    net = create_net(
        arch, encoder, in_channels if attention else total, classes, encoder_depth, decoder or {}
    )
    pretrained = resolve_weights(weights, encoder)
    if weights_bands is not None:
        if isinstance(weights_bands, str | bytes) or not all(isinstance(b, str) for b in weights_bands):
            raise GeosegError(
                f"encoder.weights_bands={weights_bands!r} must be a list of band names in the order of the "
                "weights' first conv, e.g. encoder.weights_bands=[B02,B03,B04,B08]"
            )
        if pretrained is not None:
            pretrained.bands = list(weights_bands)
    loaded: dict[str, Any] = {"weights": None, "first_conv": "none"}
    if pretrained is not None and not pretrained.is_checkpoint:
        rgb = list(rgb_channels) if rgb_channels is not None else None
        encoder_names = names if opts is None or attention else None  # early fusion: dates x bands
        loaded = load_encoder_weights(
            net.encoder, pretrained.name, tensors_of(pretrained.stored, pretrained.file), first_conv, rgb,
            pretrained.bands, encoder_names, in_channels if attention else total,
        )  # fmt: skip
        loaded.update(pretrained.record())
    if attention:
        net = TemporalNet(net, in_channels, opts.dates, opts.heads, opts.key_dim)
    norm = resolve_norm(norm)
    summary = convert_norm(net, norm)
    warn_about_norm(
        summary, arch, pretrained=pretrained is not None and not pretrained.is_checkpoint,
        weights=pretrained is not None,
    )  # fmt: skip
    standardized = 0
    if getattr(factory_target(norm), "weight_standardization", False):
        side = 2 * int(getattr(net.encoder, "output_stride", 32))
        standardized = standardize_convs(net, torch.zeros(1, total, side, side))
    meta = {
        "arch": arch, "encoder": encoder, "encoder_depth": encoder_depth, "decoder": dict(decoder or {}),
        "in_channels": total, "classes": classes, "bands": list(stats.bands) if stats else None,
        "band_names": names, "norm": summary.norm, "norm_summary": summary.as_dict(), **loaded,
    }  # fmt: skip
    if standardized:
        meta["norm_summary"]["weight_standardized_convs"] = standardized
    if opts is not None:
        meta.update(bands_per_date=in_channels, series=opts.as_dict())
        normalize = series_normalize(stats, in_channels, opts.dates)
        meta["input_scaling"] = "data"
    else:
        scaling = choose_scaling(input_scaling, pretrained, stats, names)
        meta["input_scaling"] = "data" if scaling is None else "weights"
        if pretrained is not None:
            log.info("input scaling: %s", "the data statistics" if scaling is None else scaling[2])
        normalize = band_normalize(stats, in_channels, scaling)
    model = SegmentationModel(net, normalize, meta)
    if pretrained is not None and pretrained.is_checkpoint:
        model.meta.update(pretrained.record())
        loaded = load_checkpoint_weights(model, pretrained.stored, pretrained.name, first_conv, names)
        model.meta.update(loaded)
    return model


def model_from_config(
    cfg: Mapping[str, Any],
    in_channels: int,
    classes: int,
    stats: BandStatistics | None,
    dates: int | None = None,
    band_names: Sequence[str | None] | None = None,
) -> SegmentationModel:
    """Build the model of a composed config (its ``model``, ``encoder`` and ``norm`` groups).

    With ``dates`` (the data is a series of that many dates of ``in_channels`` bands) the ``temporal``
    group chooses the fusion; without, it is ignored.
    """
    model_cfg, enc = as_dict(cfg["model"]), as_dict(cfg["encoder"])  # smp wants lists, not ListConfig
    decoder = {k: v for k, v in model_cfg.items() if k != "arch"}
    depth = whole({"depth": 5, **enc}, "depth", 1, "encoder.", example=5)
    model = build_model(
        str(model_cfg["arch"]), str(enc["name"]), in_channels, classes, config_norm(cfg),
        encoder_depth=depth, decoder=decoder, weights=enc.get("weights"),
        first_conv=str(enc.get("first_conv", "auto")), rgb_channels=enc.get("rgb_channels"), stats=stats,
        series=series_config(cfg, dates), band_names=band_names,
        input_scaling=str(enc.get("input_scaling", "auto")), weights_bands=enc.get("weights_bands"),
    )  # fmt: skip
    check_chip_size((cfg.get("data") or {}).get("chip_size"), model)
    return model


def config_norm(cfg: Mapping[str, Any]) -> NormFactory:
    """The ``norm`` group's factory, ``norm=auto`` resolved for the encoder's weights and the batch."""
    weights = (cfg.get("encoder") or {}).get("weights")
    pretrained = weights is not None and str(weights).strip().lower() not in ("", "none", "null")
    return choose_norm(instantiate(cfg["norm"]), pretrained, (cfg.get("data") or {}).get("batch_size"))


def series_config(cfg: Mapping[str, Any], dates: int | None) -> dict[str, Any] | None:
    """``build_model``'s ``series`` from the ``temporal`` group (early fusion when absent), or None."""
    if dates is None:
        return None
    temporal = cfg.get("temporal")
    return {**(as_dict(temporal) if temporal is not None else {"fusion": "early"}), "dates": dates}


def check_chip_size(chip_size: Any, model: SegmentationModel) -> None:
    """Fail before training when ``data.chip_size`` is not a multiple of the model's output stride."""
    if not isinstance(chip_size, int) or isinstance(chip_size, bool):
        return  # absent, or refused by the data checks
    divisor = model.size_divisor
    if chip_size % divisor:
        fit = max(divisor, chip_size // divisor * divisor)
        raise GeosegError(
            f"data.chip_size={chip_size} is not a multiple of {divisor}, the output stride of "
            f"{model.meta['arch']}/{model.meta['encoder']} with encoder.depth={model.meta['encoder_depth']}; "
            f"use e.g. data.chip_size={fit}"
        )
