"""A trained model rebuilt from a geoseg checkpoint, with what inference needs to know about its data."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate

from geoseg.classes import ClassInfo
from geoseg.data.band_files import check_grid_rule, check_invalid_rule, parse_files
from geoseg.data.series import SeriesOptions
from geoseg.data.stats import BandStats
from geoseg.engine.checkpoint import load_checkpoint
from geoseg.errors import GeosegError
from geoseg.inference.loaded_model import LoadedModel
from geoseg.inference.onnx_model import is_exported, load_exported
from geoseg.models.auto_norm import choose_norm
from geoseg.models.build import SegmentationModel, build_model

log = logging.getLogger(__name__)


def rebuild_model(saved: Mapping[str, Any], path: str) -> SegmentationModel:
    """The checkpoint's model with its weights, on the CPU and in eval mode."""
    meta, config = saved["meta"], saved.get("config") or {}
    if not saved.get("stats"):
        raise GeosegError(
            f"checkpoint '{path}' has no band statistics (its 'stats' entry), so its inputs cannot be "
            "normalised; use the best.pt or last.pt of a geoseg train run, or re-save it with the stats.json "
            "of its training data (geoseg.engine.checkpoint.save_model_checkpoint)"
        )
    if "norm" not in config:
        raise GeosegError(
            f"checkpoint '{path}' has no config.norm entry, so its norm layers cannot be rebuilt; use the "
            "best.pt or last.pt of a geoseg train run, or re-save it with save_model_checkpoint"
        )
    try:
        stats = BandStats(**saved["stats"]).validate(f"{path}: stats")
    except TypeError as err:
        raise GeosegError(f"checkpoint '{path}' has malformed band statistics ({err})") from None
    series = meta.get("series")  # a series model takes T*(C+1) channels and is built for C bands
    bands = int(meta["bands_per_date"] if series else meta["in_channels"])
    with warnings.catch_warnings():  # the checkpoint brings the statistics a FrozenBatchNorm holds
        warnings.filterwarnings("ignore", message="norm=frozenbatchnorm without encoder.weights")
        model = build_model(
            meta["arch"], meta["encoder"], bands, int(meta["classes"]),
            choose_norm(instantiate(config["norm"]), False, None, built=meta.get("norm")),
            encoder_depth=int(meta["encoder_depth"]), decoder=meta.get("decoder") or {}, stats=stats,
            series=series,
        )  # fmt: skip
    mismatch = state_dict_mismatch(model.state_dict(), saved["model"])
    if mismatch:
        raise GeosegError(
            f"checkpoint '{path}' holds the weights of another model than the "
            f"{meta['arch']}/{meta['encoder']} its meta describes ({mismatch}); use the checkpoint the "
            "training run wrote"
        )
    model.load_state_dict(saved["model"])
    model.meta.update({k: v for k, v in meta.items() if k not in ("norm_summary",)})
    return model.eval()


def state_dict_mismatch(own: Mapping[str, torch.Tensor], saved: Mapping[str, Any]) -> str:
    """What keeps ``saved`` from loading into a model whose state dict is ``own``: '' when it fits."""
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [k for k in own if k in saved and getattr(saved[k], "shape", None) != own[k].shape]
    parts = [
        f"{what}: {len(keys)}, e.g. '{keys[0]}'"
        for keys, what in ((missing, "missing tensors"), (unexpected, "unexpected tensors"),
                           (shapes, "tensors of another shape"))
        if keys
    ]  # fmt: skip
    return "; ".join(parts)


def load_model(path: str, device: torch.device) -> LoadedModel:
    """Read ``path`` weights-only and rebuild its model on ``device`` (an ``.onnx`` export runs in
    onnxruntime instead); every failure is one line."""

    if is_exported(path):
        return load_exported(path, device)
    saved = load_checkpoint(path)
    model = rebuild_model(saved, path).to(device)
    data = saved["config"].get("data") or {}
    classes = data.get("classes") or [
        {"code": i, "name": n} for i, n in enumerate(saved.get("classes") or [])
    ]
    if len(classes) != model.meta["classes"]:
        raise GeosegError(
            f"checkpoint '{path}' names {len(classes)} classes but its model predicts {model.meta['classes']}"
        )
    series = model.meta.get("series")
    bands = (f"{series['dates']} dates x {model.meta['bands_per_date']} bands, {series['fusion']} fusion"
             if series else f"{model.in_channels} bands")  # fmt: skip
    log.info("loaded %s: %s on %s, %s, %d classes", path, model.meta["arch"], model.meta["encoder"], bands,
             len(classes))  # fmt: skip
    files = parse_files(data.get("files"))
    return LoadedModel(
        model=model, path=path, bands=data.get("bands"), stats=BandStats(**saved["stats"]),
        nodata=data.get("nodata"), classes=ClassInfo.from_config(classes), files=files,
        grid=check_grid_rule(data.get("grid"), files),
        invalid=check_invalid_rule(data.get("invalid", "all")),  # geoseg 0.1 trained with rule "all"
        series=SeriesOptions.from_config(data.get("series")) if model.meta.get("series") else None,
        chip_size=int(data["chip_size"]) if isinstance(data.get("chip_size"), int) else None,
    )  # fmt: skip
