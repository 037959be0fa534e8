"""``geoseg model-info``: build the configured model and show what the norm choice did to it."""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from geoseg.config import as_dict, whole
from geoseg.data.build import load_scenes
from geoseg.data.series import series_read
from geoseg.engine.runtime import check_batch_for_batchnorm
from geoseg.models.build import SegmentationModel, model_from_config
from geoseg.models.convert import format_counts, is_feature_norm, num_channels

log = logging.getLogger(__name__)


def describe(model: SegmentationModel, out_shape: tuple[int, ...], chip: int) -> str:
    """A few lines on the model: layout, parameter counts, norm layers, weights, output shape."""
    meta = model.meta
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary, divisor = meta["norm_summary"], model.size_divisor
    series = meta.get("series")
    layout = f"{meta['in_channels']} bands"
    if series:
        layout = (f"{series['dates']} dates x ({meta['bands_per_date']} bands + validity) = {layout[:-6]} "
                  f"channels, {series['fusion']} fusion")  # fmt: skip
    return "\n".join(
        [
            f"model        {meta['arch']} on {meta['encoder']} (depth {meta['encoder_depth']})",
            f"input        {layout}, {chip}×{chip} px chips (multiple of {divisor})",
            f"classes      {meta['classes']}",
            f"parameters   {params / 1e6:.2f} M ({trainable / 1e6:.2f} M trainable)",
            f"norm layers  {format_counts(summary['before'])} -> {format_counts(summary['after'])}",
            f"weights      {meta['weights'] or 'random init'} (first conv: {meta['first_conv']})",
            f"output       {tuple(out_shape)} logits for a batch of {out_shape[0]}",
        ]
    )


def norm_layer_table(model: SegmentationModel) -> str:
    """One row per feature-map norm layer: its name, type, channels and (for GroupNorm) groups."""
    rows = []
    for name, module in model.net.named_modules():
        if not is_feature_norm(module):
            continue
        channels = num_channels(module)
        groups = getattr(module, "num_groups", None)
        per = f"{channels // groups}" if groups else "-"
        rows.append((name, type(module).__name__, str(channels), str(groups or "-"), per))
    if not rows:
        return "norm layers: none"
    head = ("layer", "type", "channels", "groups", "channels/group")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(row: tuple[str, ...]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(cells))

    return "\n".join(line(r) for r in [head, *rows])


def run(cfg: DictConfig) -> SegmentationModel:
    data = as_dict(cfg.data)
    batch = whole(cfg, "batch_size", 1, example=2)
    scenes = load_scenes(data, "train")
    series = series_read(data, scenes, training=True)
    dates = None if series is None else series.dates
    model = model_from_config(
        cfg, len(scenes[0].bands), len(data["classes"]), stats=None, dates=dates,
        band_names=scenes[0].selected_band_names,
    )  # fmt: skip
    chip = int(data["chip_size"])
    check_batch_for_batchnorm(model, batch, model.meta["norm"], "batch_size")
    x = torch.zeros(batch, model.in_channels, chip, chip)
    model.train()
    out = model(x)
    out.float().mean().backward()
    log.info("%s\n\n%s", describe(model, tuple(out.shape), chip), norm_layer_table(model))
    return model
