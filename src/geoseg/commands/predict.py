"""``geoseg predict checkpoint=... input=... output=...``: class maps of whole scenes from a checkpoint.

Under torchrun (``torchrun ... -m geoseg predict``) every rank checks all inputs, then predicts every
world_size-th scene on its own GPU. The ranks wait for each other once after the checks, so that no
rank sees another's fresh output as an existing file, and once at the end.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from geoseg.data.band_files import check_grid_rule, parse_files
from geoseg.data.scene_paths import scene_name
from geoseg.device import autocast_dtype
from geoseg.engine.checkpoint import checkpoint_file
from geoseg.engine.distributed import barrier, cleanup_distributed, init_distributed
from geoseg.errors import GeosegError
from geoseg.inference.inputs import find_inputs, output_paths
from geoseg.inference.loaded import LoadedModel, load_model
from geoseg.inference.onnx_model import is_exported
from geoseg.inference.predict import PredictOptions, predict_scene, prepare
from geoseg.models.memory_format import channels_last_for

log = logging.getLogger(__name__)

USAGE = (
    "geoseg predict checkpoint=RUN|RUN/best.pt|MODEL.onnx input=SCENE.tif|FOLDER|'GLOB' output=OUT.tif|FOLDER"
)


def require(cfg: DictConfig, *keys: str) -> None:
    """One-line error naming the options that were not given."""
    missing = [k for k in keys if cfg.get(k) in (None, "")]
    if missing:
        raise GeosegError(f"missing {', '.join(f'{k}=' for k in missing)}; usage: {USAGE}")


def options(cfg: DictConfig, loaded: LoadedModel) -> PredictOptions:
    """The options of ``cfg``; tile=/overlap= left null take the exported model's defaults, else
    PredictOptions' own."""
    values = OmegaConf.to_container(cfg, resolve=True)
    fields = {f.name: f for f in dataclasses.fields(PredictOptions)}
    for key in ("tile", "overlap"):
        if values.get(key) is None:
            values[key] = getattr(loaded, key) or fields[key].default
    return PredictOptions(**{name: values[name] for name in fields})


def exported_amp(amp: str, path: str) -> None:
    """An ONNX model runs in the precision it was exported in: amp=auto means that, bf16/fp16 are refused."""
    if amp not in ("auto", "fp32"):
        raise GeosegError(
            f"amp={amp} does not apply to the ONNX model '{path}' (onnxruntime runs it in float32); drop "
            "amp= or predict from the checkpoint"
        )


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    require(cfg, "checkpoint", "input", "output")
    info = init_distributed(str(cfg.device), option="device")
    try:
        loaded = load_model(checkpoint_file(str(cfg.checkpoint)), info.device)
        opts = options(cfg, loaded)
        if is_exported(loaded.path):
            amp = exported_amp(str(cfg.amp), loaded.path)
            opts.channels_last = False  # onnxruntime takes NCHW arrays
        else:
            amp = autocast_dtype(str(cfg.amp), info.device, option="amp")
            opts.channels_last = channels_last_for(opts.channels_last, loaded.model, "channels_last")
        if opts.channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        if cfg.get("files") is not None:  # files= replaces the checkpoint's data.files
            loaded.files = parse_files(OmegaConf.to_container(cfg.files, resolve=True))
            loaded.grid = check_grid_rule(cfg.get("grid") or loaded.grid, loaded.files)
        elif cfg.get("grid") is not None:
            loaded.grid = check_grid_rule(cfg.grid, loaded.files)
        inputs = find_inputs(str(cfg.input), loaded.files, loaded.series)
        first = loaded.files[0].name if loaded.files else None
        names = [getattr(paths, "title", None) or scene_name(paths[0], first) for paths in inputs]
        jobs = prepare(loaded, inputs, output_paths(inputs, str(cfg.output), names), opts)
        barrier(info)  # every rank checks the outputs before any rank writes one (same job list everywhere)
        mine = jobs[info.rank :: info.world_size]
        if info.enabled:
            log.info("rank %d predicts %d of %d scenes", info.rank, len(mine), len(jobs))
        results = [predict_scene(loaded, job, opts, info.device, amp, f"scene {k}/{len(mine)}")
                   for k, job in enumerate(mine, 1)]  # fmt: skip
        barrier(info)
    finally:
        cleanup_distributed()
    return results
