"""A training run built from the config: :func:`build_run` is the loop's set-up half."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from geoseg.config import as_dict, whole
from geoseg.data.build import (
    SplitData,
    build_augment,
    build_split,
    check_split_labels,
    load_scenes,
    split_has_labels,
    stac_frozen_items,
    train_stats,
    warn_repeated_bands,
)
from geoseg.data.scenes import Scene
from geoseg.data.series import series_read
from geoseg.data.stats import BandStats, save_stats
from geoseg.device import autocast_dtype
from geoseg.engine.distributed import broadcast_object, init_distributed, main_process_first
from geoseg.engine.log import reset_peak_memory
from geoseg.engine.losses import check_ignore_index
from geoseg.engine.optim import build_optimizer
from geoseg.engine.runtime import check_batch_for_batchnorm, seed_everything
from geoseg.engine.state import DistInfo, Run, TrainerOptions
from geoseg.errors import GeosegError
from geoseg.io import atomic_write_text, ensure_free_space, ensure_writable_dir
from geoseg.models.build import model_from_config
from geoseg.models.memory_format import channels_last_for

log = logging.getLogger(__name__)


def remove_stray_run_dir(own: str, shared: str) -> None:
    """Delete the folder Hydra made for this rank when it differs from rank 0's and holds only Hydra's files.

    Ranks started by hand without ``hydra.run.dir`` each time-stamp their own folder (Hydra #2070).
    """
    if own == shared or not os.path.isdir(own):
        return
    if set(os.listdir(own)) <= {".hydra", "train.log"}:
        shutil.rmtree(own, ignore_errors=True)
        with contextlib.suppress(OSError):  # the date folder, when this rank's was its only entry
            os.rmdir(os.path.dirname(own))


def build_data(cfg: DictConfig, info: DistInfo) -> tuple[BandStats, SplitData, SplitData]:
    """Band statistics and the train/val splits, sharded for this rank (rank 0 writes demo data and stats)."""
    data_cfg = as_dict(cfg.data)
    with main_process_first(info):  # rank 0 builds the scene index, the others read it
        scenes = {split: load_scenes(data_cfg, split) for split in ("train", "val")}
        labelled = {split: split_has_labels(data_cfg, split, found) for split, found in scenes.items()}
    check_splits(scenes["train"], scenes["val"])
    if info.is_main:
        warn_repeated_bands(scenes["train"])
    for split, found in scenes.items():  # every rank takes the same decision, before any statistics
        check_split_labels(data_cfg, split, found, labelled[split])
    world = info.world_size if info.enabled else 1  # statistics: a shard per rank, merged
    stats = train_stats(
        data_cfg, progress=info.is_main, scenes=scenes["train"], rank=info.rank, world_size=world
    )
    series = series_read(data_cfg, scenes["train"], training=True)
    if series is not None:
        log.info("series: %d dates per chip (data.series.select=%s), %d bands + validity each",
                 series.dates, series.select, len(stats.bands))  # fmt: skip
    common = dict(stats=stats, seed=int(cfg.seed), rank=info.rank, world_size=info.world_size, series=series)
    augment = build_augment(cfg.get("aug"))
    train = build_split(data_cfg, "train", augment=augment, scenes=scenes["train"], **common)
    val = build_split(data_cfg, "val", augment=None, scenes=scenes["val"], **common)
    return stats, train, val


def record_stac_items(data_cfg: dict, run_dir: str) -> None:
    """Copy each split's STAC items (ids, asset hrefs, as found) into the run folder, so the run can be
    repeated exactly after the catalog changes (``data.stac.source=<run>/stac-items-train.json``)."""
    for split, frozen in stac_frozen_items(data_cfg).items():
        path = os.path.join(run_dir, f"stac-items-{split}.json")
        with open(frozen, encoding="utf-8") as fh:
            atomic_write_text(path, fh.read(), "STAC items")
        log.info("%s: the STAC items of this run are in %s", split, path)


def check_splits(train: list[Scene], val: list[Scene]) -> None:
    """The val scenes must have the train scenes' bands; warn when a scene is in both with overlapping
    regions (val metrics would be measured on training pixels)."""
    if train and val and len(train[0].bands) != len(val[0].bands):
        raise GeosegError(
            f"the train scenes have {len(train[0].bands)} band(s) ('{train[0].image}') but the val scenes "
            f"{len(val[0].bands)} ('{val[0].image}'); check data.splits (does an images pattern match "
            "label files?) or data.manifest"
        )
    if train and val and train[0].is_series != val[0].is_series:
        kinds = {True: "a series ({date} in images)", False: "single dates"}
        raise GeosegError(
            f"the train scenes are {kinds[train[0].is_series]} but the val scenes {kinds[val[0].is_series]}; "
            "give both splits the same kind of images pattern"
        )
    regions: dict[str, list[tuple[int, int, int, int]]] = {}
    for t in train:
        regions.setdefault(os.path.abspath(t.image), []).append(t.bounds)
    for v in val:
        if any(_overlap(r, v.bounds) for r in regions.get(os.path.abspath(v.image), [])):
            log.warning("val scene '%s' is also a train scene and their regions overlap: val metrics will "
                        "be measured on training pixels; split by scene or by region", v.image)  # fmt: skip


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def step_counts(tr: TrainerOptions, data: DictConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(optimizer steps in the run, epochs) for this loader length."""
    accum = tr.grad_accum_steps
    steps_per_epoch = batches_per_epoch // accum
    if steps_per_epoch == 0:
        raise GeosegError(
            f"data.chips_per_epoch={data.chips_per_epoch} gives {batches_per_epoch} full batches of "
            f"data.batch_size={data.batch_size} per rank, fewer than trainer.grad_accum_steps={accum}; "
            "raise data.chips_per_epoch"
        )
    if tr.max_steps:  # a step budget replaces max_epochs, so the LR curve always runs to its end
        return tr.max_steps, math.ceil(tr.max_steps / steps_per_epoch)
    return steps_per_epoch * tr.max_epochs, tr.max_epochs


def check_checkpoint_space(run_dir: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fail before the first step when the run folder's disk cannot hold ``last.pt``, ``best.pt`` and
    the temporary copy a save writes (weights plus one or two optimizer slots per parameter)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    slots = 2 if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) else 1
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    ensure_free_space(
        run_dir, 3 * (weights + slots * params), "three checkpoints (last.pt, best.pt, a temporary copy)",
        "free disk space or put the run on another disk with hydra.run.dir=...",
    )  # fmt: skip


def encoder_training(cfg: DictConfig, max_epochs: int) -> tuple[Any, int]:
    """``encoder.lr_mult`` (checked by the optimizer) and ``encoder.freeze_epochs``, checked."""
    enc = as_dict(cfg.encoder)
    lr_mult = enc.get("lr_mult", 1.0)  # checked by build_optimizer
    frozen = whole({"freeze_epochs": 0, **enc}, "freeze_epochs", 0, "encoder.", example=1)
    if frozen >= max_epochs:
        raise GeosegError(
            f"encoder.freeze_epochs={frozen} leaves no epoch of the {max_epochs} to train the encoder; "
            "use fewer (e.g. 1) or raise trainer.max_epochs"
        )
    if frozen and enc.get("weights") in (None, "", "none", "null"):
        log.warning("encoder.freeze_epochs=%d without encoder.weights freezes a random encoder", frozen)
    return lr_mult, frozen


def build_run(cfg: DictConfig, run_dir: str) -> Run:
    """Join the process group, then build data, model, optimizer, LR schedule, scaler and loss."""
    options = TrainerOptions.from_config(as_dict(cfg.trainer))
    seed = whole(cfg, "seed")
    info = init_distributed(options.device)
    reset_peak_memory(info.device)
    own_dir = os.path.abspath(run_dir)
    run_dir = str(broadcast_object(own_dir, info))
    if info.is_main:
        ensure_writable_dir(run_dir, "run folder")
        log.info("run folder: %s", run_dir)
    else:
        logging.getLogger().setLevel(logging.WARNING)
        remove_stray_run_dir(own_dir, run_dir)
    amp = autocast_dtype(options.amp, info.device)
    seed_everything(seed)

    stats, train, val = build_data(cfg, info)
    check_ignore_index(as_dict(cfg.loss), int(cfg.data.ignore_index))  # data.* is checked by now
    classes = [str(c["name"]) for c in cfg.data.classes]
    series = train.dataset.series
    dates = None if series is None else series.dates
    names = train.scenes[0].selected_band_names
    model = model_from_config(cfg, len(stats.bands), len(classes), stats, dates, names).to(info.device)
    check_batch_for_batchnorm(model, int(cfg.data.batch_size), model.meta["norm"])
    channels_last = channels_last_for(options.channels_last, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    total_steps, max_epochs = step_counts(options, cfg.data, len(train.loader))
    effective_batch = int(cfg.data.batch_size) * info.world_size * options.grad_accum_steps
    lr_mult, frozen_epochs = encoder_training(cfg, max_epochs)
    optimizer = build_optimizer(cfg.optim, model, effective_batch, lr_mult, split_encoder=frozen_epochs > 0)
    frozen = {"encoder_frozen_steps": frozen_epochs * (total_steps // max_epochs)} if frozen_epochs else {}
    if info.is_main:
        check_checkpoint_space(run_dir, model, optimizer)
        save_stats(stats, os.path.join(run_dir, "stats.json"))
        record_stac_items(as_dict(cfg.data), run_dir)
    return Run(
        cfg, run_dir, info, options, amp, stats, classes, train, val, model, optimizer,
        scheduler=instantiate(cfg.sched)(optimizer, total_steps, **frozen),
        scaler=torch.amp.GradScaler(info.device.type, enabled=amp == torch.float16),
        loss_fn=instantiate(cfg.loss).to(info.device),
        total_steps=total_steps, max_epochs=max_epochs, channels_last=channels_last,
    )  # fmt: skip
