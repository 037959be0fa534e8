"""Build scenes, statistics, datasets, samplers and DataLoaders from the ``data`` and ``aug`` configs."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hydra
import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from geoseg.data.band_files import FileEntry, check_grid_rule, check_invalid_rule, parse_files
from geoseg.data.chip_groups import check_group_cache, chips_per_block, origin_cells
from geoseg.data.class_balance import (
    balanced_weights,
    candidate_class_fractions,
    class_cell_counts,
    delivered_fractions,
)
from geoseg.data.data_options import (
    cache_dir,
    check_data_config,
    check_sampling,
    class_map_from,
    data_root,
    scene_index,
    stats_path,
)
from geoseg.data.dataset import ChipDataset
from geoseg.data.label_checks import missing_field_error
from geoseg.data.labelled import split_labelled, unlabelled_split_error, warn_unlabelled_scenes
from geoseg.data.labels import ClassMap
from geoseg.data.loader import make_loader, num_workers, reads_in_flight, whole_number
from geoseg.data.masks import coarse_valid_mask, label_codes
from geoseg.data.remote import is_remote
from geoseg.data.samplers import GridChipSampler, RandomChipSampler
from geoseg.data.scene_index import SceneIndex, cached_array, entry_key
from geoseg.data.scene_paths import ScenePaths, find_scene_files, read_manifest, warn_bands_as_scenes
from geoseg.data.scenes import Scene, inspect_scene, scene_files
from geoseg.data.series import SeriesRead, is_series_pattern
from geoseg.data.series_load import load_series
from geoseg.data.stac import asset_nodata, item_scenes
from geoseg.data.stac_options import StacOptions, stac_given
from geoseg.data.stac_search import frozen_path, resolve_items
from geoseg.data.stats import BandStats, load_or_compute_stats, stats_key
from geoseg.data.transforms import Augment
from geoseg.data.vector_labels import MissingField, VectorOptions
from geoseg.data.windows import block_alignment, candidate_step, random_candidates
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One split's scenes, dataset, sampler and loader."""

    scenes: list[Scene]
    dataset: ChipDataset
    sampler: RandomChipSampler | GridChipSampler
    loader: DataLoader


@dataclass(frozen=True)
class StackOptions:
    """``data.files``, ``data.grid`` and ``data.invalid``, parsed once."""

    files: tuple[FileEntry, ...] | None
    grid: str
    invalid: str

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> StackOptions:
        files = parse_files(cfg.get("files"))
        return cls(files, check_grid_rule(cfg.get("grid"), files), check_invalid_rule(cfg.get("invalid")))


def load_scenes(cfg: Mapping[str, Any], split: str, progress: bool = True) -> list[Scene]:
    """Find and validate the scenes of ``split`` (from ``data.manifest`` or ``data.splits``); what
    inspection learns is cached in the scene index (``data.index``) and reused for unchanged files."""
    check_data_config(cfg)
    stack = StackOptions.from_config(cfg)
    root = data_root(cfg)
    region = None
    titles: list[str | None] = []
    if cfg.get("manifest"):
        manifest = str(cfg["manifest"])
        path = manifest if os.path.isabs(manifest) else os.path.join(root, manifest)
        pairs = read_manifest(path, split, stack.files)
    else:
        spec = (cfg.get("splits") or {}).get(split)
        if spec is None:
            raise GeosegError(f"data.splits has no '{split}' entry; add images/labels patterns for it.")
        region = spec.get("region")
        if split_uses_stac(cfg, spec):
            series_group = (cfg.get("series") or {}).get("group")  # items of a place as dates of a series
            pairs, titles, stack = stac_pairs(cfg, {**spec, "labels": None} if series_group else spec, split,
                                              stack, root)  # fmt: skip
            if series_group:
                items, _ = resolve_items(stac_options(cfg, spec, split, root), cache_dir(cfg))
        elif is_series_pattern(spec.get("images")):
            pairs = []
        else:
            pairs = find_scene_files(root, spec["images"], spec.get("labels"), stack.files, split)
    bands = None if cfg.get("bands") is None else list(cfg["bands"])
    nodata = cfg.get("nodata")
    nodata = list(nodata) if isinstance(nodata, Sequence) else nodata
    vector = VectorOptions.from_config(cfg.get("vector"))
    options = dict(
        bands=bands, nodata=nodata, label_nodata=cfg.get("label_nodata"),
        class_codes=label_codes(cfg["classes"]), chip_size=int(cfg["chip_size"]),
        unknown_labels=cfg.get("unknown_labels", "error"), region=region,
        files=stack.files, grid=stack.grid, invalid=stack.invalid, vector=vector,
    )  # fmt: skip
    if not cfg.get("manifest") and is_series_pattern(spec.get("images")):
        return load_series(cfg, spec, split, options, root, progress)
    if not cfg.get("manifest") and split_uses_stac(cfg, spec) and (cfg.get("series") or {}).get("group"):
        return load_series(cfg, spec, split, options, root, progress, items=items)
    index = scene_index(cfg)
    scenes = []
    bar = tqdm(pairs, desc=f"inspect {split}", unit="scene", disable=not (progress and sys.stderr.isatty()))
    for k, (images, label) in enumerate(bar):
        key = entry_key(options, [images] if isinstance(images, str) else list(images), label)
        scene = index.scene(key) if index is not None else None
        if scene is None:
            try:
                scene = inspect_scene(images, label, **options)
                scene = dataclasses.replace(scene, index_key=key, title=titles[k] if titles else None)
            except MissingField as err:
                raise missing_field_error(err, [lab for _, lab in pairs], vector) from None
            if index is not None:
                index.put(key, scene)
        scenes.append(scene)
    if index is not None:
        index.save()
        log.info("%s: %d scenes, %d from the scene index %s", split, len(scenes), index.hits, index.path)
    if stack.files is None:
        warn_bands_as_scenes(scenes)
    return scenes


def split_uses_stac(cfg: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether a split's scenes come from STAC (its own ``stac`` entry, or ``data.stac`` and no images)."""
    if spec.get("stac"):
        return True
    return stac_given(cfg.get("stac")) and not spec.get("images")


def stac_options(cfg: Mapping[str, Any], spec: Mapping[str, Any], split: str, root: str) -> StacOptions:
    """``data.stac`` with the split's ``stac`` entry laid over it (e.g. another bbox or date range);
    a relative ``source`` or ``intersects`` file is under ``data.root``."""
    merged = {**dict(cfg.get("stac") or {}), **dict(spec.get("stac") or {})}
    option = "data.stac" if not spec.get("stac") else f"data.splits.{split}.stac over data.stac"
    return StacOptions.from_config(merged, option, root=root)


def stac_pairs(
    cfg: Mapping[str, Any], spec: Mapping[str, Any], split: str, stack: StackOptions, root: str
) -> tuple[list[ScenePaths], list[str | None], StackOptions]:
    """The scenes of a STAC split: each item's ``data.files`` assets (and label), item ids as scene names,
    and ``data.files`` with the nodata the assets declare (``raster:bands``) where the entry sets none."""
    opts = stac_options(cfg, spec, split, root)
    items, _ = resolve_items(opts, cache_dir(cfg))
    found = item_scenes(items, stack.files, opts.label_asset, spec.get("labels"), root)
    declared = asset_nodata(items, stack.files) if stack.files else {}
    files = tuple(
        dataclasses.replace(e, nodata=declared[e.name])
        if e.nodata is None and declared.get(e.name) is not None else e
        for e in stack.files or ()
    )  # fmt: skip
    return [(paths, label) for paths, label, _ in found], [name for *_, name in found], (
        dataclasses.replace(stack, files=files or stack.files))  # fmt: skip


def stac_frozen_items(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The frozen STAC items (ItemCollection files in ``data.cache_dir``) of each split found by
    ``data.stac``, for the run's record."""
    out = {}
    for split, spec in (cfg.get("splits") or {}).items():
        if spec and not cfg.get("manifest") and split_uses_stac(cfg, spec):
            path = frozen_path(stac_options(cfg, spec, split, data_root(cfg)), cache_dir(cfg))
            if os.path.exists(path):
                out[split] = path
    return out


def warn_repeated_bands(scenes: Sequence[Scene]) -> None:
    """Say once at start-up when ``data.bands`` selects a band more than once (of the first scene): it
    is allowed, a grey band copied to three channels, but more often a typo."""
    if not scenes:
        return
    scene = scenes[0]
    repeated = sorted({b for b in scene.bands if scene.bands.count(b) > 1})
    if repeated:
        names = dict(enumerate(scene.band_names, start=1))
        shown = ", ".join(f"{b} ({names[b]})" if names.get(b) else str(b) for b in repeated)
        log.warning("data.bands %s uses band %s more than once: the model gets each copy as an input channel "
                    "(fine for a grey band copied to three channels; list each band once otherwise)",
                    list(scene.bands), shown)  # fmt: skip


def split_has_labels(cfg: Mapping[str, Any], split: str, scenes: Sequence[Scene]) -> bool | None:
    """Whether ``split`` has a labelled pixel (see :mod:`geoseg.data.labelled`): a val label is read where
    inspection cannot tell; the train split's labels are counted by its chip sampler, so None there."""
    read = split != "train"
    return split_labelled(scenes, class_map_from(cfg), scene_index(cfg) if read else None, read)


def check_split_labels(
    cfg: Mapping[str, Any], split: str, scenes: Sequence[Scene], labelled: bool | None
) -> None:
    """Refuse a split without a labelled pixel (``labelled`` from :func:`split_has_labels`) in one line;
    warn about val scenes without a label file (train scenes without one are skipped by the sampler)."""
    if labelled is False:
        raise unlabelled_split_error(split, scenes, class_map_from(cfg), cfg.get("manifest"))
    if split != "train":
        warn_unlabelled_scenes(split, scenes)


def build_augment(aug_cfg: Any) -> Augment | None:
    """Instantiate ``configs/aug`` (an albumentations Compose) and wrap it; empty means no augmentation."""
    if not aug_cfg or "_target_" not in aug_cfg:
        return None
    return Augment(hydra.utils.instantiate(aug_cfg))


def build_split(
    cfg: Mapping[str, Any],
    split: str,
    stats: BandStats,
    augment: Augment | None,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    scenes: Sequence[Scene] | None = None,
    grid: bool | None = None,
    max_chips: int | None = None,
    series: SeriesRead | None = None,
) -> SplitData:
    """Dataset, sampler (random for ``train``, grid otherwise) and loader of one split.

    Pass the split's ``scenes`` when you already loaded them, to skip checking the files again, and
    ``grid=True`` for grid chips of the train split (to evaluate on it), at most ``max_chips`` of them.
    """
    grid = split != "train" if grid is None else grid
    scenes = list(scenes) if scenes is not None else load_scenes(cfg, split)
    stats.check_bands(scenes[0].bands, stats_path(cfg, stats.key))
    cmap = class_map_from(cfg)
    size = int(cfg["chip_size"])
    dataset = ChipDataset(
        scenes, size, cmap, fill=stats.mean,
        augment=None if grid else augment, max_open_files=whole_number(cfg, "max_open_files", 64),
        reads_in_flight=reads_in_flight(cfg, any(is_remote(p) for p in scene_files(scenes))),
        series=series if series is None else dataclasses.replace(series, training=not grid),
    )  # fmt: skip
    if not grid:
        sampler = random_sampler(scenes, cfg, cmap, seed, rank, world_size)
    else:
        stride = cfg.get("val_stride") or size
        sampler = GridChipSampler([s.bounds for s in scenes], size, int(stride), rank, world_size, max_chips)
    return SplitData(scenes, dataset, sampler, make_loader(dataset, sampler, cfg, drop_last=not grid))


def random_sampler(
    scenes: Sequence[Scene],
    cfg: Mapping[str, Any],
    cmap: ClassMap | None,
    seed: int,
    rank: int,
    world_size: int,
) -> RandomChipSampler:
    """Random chips weighted by valid area (or by class, ``data.sampling``), filtered by
    ``data.max_nodata_fraction``."""
    size = int(cfg["chip_size"])
    sampling, power = check_sampling(cfg)
    candidates, weights, empty, classes, cells = [], [], [], [], []
    unlabelled: list[Scene] = []
    index = scene_index(cfg)
    group = chips_per_block(cfg)
    for scene in scenes:
        align = chip_alignment(scene, size) if cfg.get("align_chips", False) else (1, 1)
        step = candidate_step(size, align)
        coarse = cached_valid_mask(scene, step, cmap, index)
        row0, col0, row1, col1 = scene.bounds
        i0, j0 = -(-row0 // step), -(-col0 // step)  # first candidate cell inside the region
        sub = coarse[i0 : row1 // step, j0 : col1 // step]
        origins, frac = random_candidates(
            sub, row1 - i0 * step, col1 - j0 * step, size, float(cfg["max_nodata_fraction"]), step
        )
        origins += np.array([i0 * step, j0 * step])
        on_lattice = (origins[:, 0] % align[0] == 0) & (origins[:, 1] % align[1] == 0)
        origins, frac = origins[on_lattice], frac[on_lattice]
        # exact, at full resolution; without a class map (statistics, tests) every pixel counts as labelled
        counts = None if cmap is None else cached_class_counts(scene, step, cmap, index)
        if counts is not None and not counts[:, i0 : row1 // step, j0 : col1 // step].any():  # all ignore
            origins, frac = origins[:0], frac[:0]
            unlabelled.append(scene)
            cause = "no label file" if scene.label is None else "no data.classes code in its label"
            log.warning("training scene '%s' has no labelled pixel (%s); it is skipped", scene.image, cause)
        elif not sub.any():  # never draw all-ignore chips, even with data.max_nodata_fraction=1
            origins, frac = origins[:0], frac[:0]
            empty.append(scene.image)
            log.warning("training scene '%s' is all nodata (image nodata %s, or no labelled pixel); "
                        "it is skipped", scene.image, scene.nodata)  # fmt: skip
        elif len(origins) == 0:
            log.warning("training scene '%s' has no %d-px chip with at most data.max_nodata_fraction=%s "
                        "nodata; it is skipped", scene.image, size, cfg["max_nodata_fraction"])  # fmt: skip
        candidates.append(origins)
        weights.append(frac)
        if group > 1:  # each candidate's file block, for groups of chips read once
            cells.append(origin_cells(scene, size, origins))
        if counts is not None:  # the exact class mix of every candidate, from the full-resolution counts
            classes.append(candidate_class_fractions(counts, origins, (i0 * step, j0 * step), size, step))
    if index is not None:
        index.save()
    if len(unlabelled) == len(scenes):
        raise unlabelled_split_error("train", scenes, cmap, cfg.get("manifest"))
    fractions = np.concatenate(classes) if classes else None
    if sampling == "class_balanced" and fractions is not None:
        weights = np.split(balanced_weights(fractions, power), np.cumsum([len(c) for c in candidates])[:-1])
    if len(empty) == len(scenes) == 1:
        raise GeosegError(
            f"the only training scene '{empty[0]}' is all nodata (image nodata {scenes[0].nodata}, or no "
            "labelled pixel); check data.nodata and its label, or add scenes with valid pixels."
        )
    if sum(len(c) for c in candidates) == 0:
        raise GeosegError(
            "no training chip passes data.max_nodata_fraction="
            f"{cfg['max_nodata_fraction']}; raise it or check data.nodata / the label files."
        )
    sampler = RandomChipSampler(
        candidates, weights, int(cfg["chips_per_epoch"]), seed, rank, world_size, group, cells
    )
    if group > 1:
        check_group_cache(scenes, size, group, num_workers(cfg))
        log.info("random chips in groups of %d whose origins share a file block (data.chips_per_block=%s): "
                 "%d independent groups per batch of %d", group, cfg.get("chips_per_block", "auto"),
                 int(cfg["batch_size"]) // group, int(cfg["batch_size"]))  # fmt: skip
    if fractions is not None and len(fractions) == len(sampler.p):
        sampler.class_mix = delivered_fractions(fractions, sampler.p).tolist()
        mix = ", ".join(
            f"{c}: {m:.3f}" for c, m in zip(cmap.codes.astype(int), sampler.class_mix, strict=True)
        )
        log.info("%s sampling: the drawn chips hold the classes in the fractions %s", sampling, mix)
    return sampler


def cached_class_counts(scene: Scene, step: int, cmap: ClassMap, index: SceneIndex | None) -> np.ndarray:
    """:func:`class_cell_counts`, from the scene index when it holds them for this step and class map."""
    if scene.label is None:
        return np.zeros((len(cmap.codes), -(-scene.height // step), -(-scene.width // step)), np.int32)
    name = f"classes:{step}:{cmap.codes.astype(int).tolist()}"
    dtype = np.uint16 if step * step < 65536 else np.int32
    return cached_array(index, scene.index_key, name, lambda: class_cell_counts(scene, step, cmap), dtype)


def cached_valid_mask(scene: Scene, step: int, cmap: ClassMap | None, index: SceneIndex | None) -> np.ndarray:
    """:func:`coarse_valid_mask`, from the scene index when it holds one for this step and class map."""
    name = f"valid:{step}:{None if cmap is None else cmap.codes.astype(int).tolist()}"
    mask = cached_array(index, scene.index_key, name, lambda: coarse_valid_mask(scene, step, cmap), np.uint8)
    return mask.astype(np.float64)


def chip_alignment(scene: Scene, size: int) -> tuple[int, int]:
    """(rows, cols) lattice of random-chip origins aligned to the image's blocks (``data.align_chips``)."""
    if scene.block is None:
        return (1, 1)
    return (
        block_alignment(size, scene.block[0], scene.height),
        block_alignment(size, scene.block[1], scene.width),
    )


def train_stats(
    cfg: Mapping[str, Any], progress: bool = True, scenes: Sequence[Scene] | None = None, rank: int = 0,
    world_size: int = 1,
) -> BandStats:  # fmt: skip
    """Band statistics of the training split, loaded from ``data.stats_path`` or computed and cached
    (under DDP every rank calls it and reads a shard of the scenes)."""
    scenes = list(scenes) if scenes is not None else load_scenes(cfg, "train")
    scenes = [d for s in scenes for d in s.date_scenes()]  # a series: every date's valid pixels
    path = stats_path(cfg, stats_key(scenes))
    return load_or_compute_stats(scenes, path, progress=progress, rank=rank, world_size=world_size)
