"""Finding and inspecting a split's series scenes (a ``{date}`` placeholder in its ``images``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm import tqdm

from geoseg.data.remote import is_url
from geoseg.data.scene_paths import label_path, scene_name
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.data.series import SeriesOptions, find_series, keep_dates, series_dates
from geoseg.data.series_scene import inspect_dates
from geoseg.data.stac_series import item_series
from geoseg.data.stack import stack_dtype
from geoseg.errors import GeosegError

log = logging.getLogger(__name__)


def series_title(path: str, date_text: str, file_value: str | None) -> str:
    """A series scene's name: its first file's scene name without the date text (``s2_scene_0`` ->
    ``s2_scene``)."""
    name = scene_name(path, file_value)
    return scene_name(f"{name}.tif", date_text)


def load_series(
    cfg: Mapping[str, Any], spec: Mapping[str, Any], split: str, options: Mapping[str, Any], root: str,
    progress: bool = True, items: Sequence[Mapping[str, Any]] | None = None,
) -> list[Scene]:  # fmt: skip
    """The series scenes of ``split``: the dates of each place (``data.series``; from a ``{date}``
    pattern, or from STAC ``items`` grouped by ``data.series.group``), kept by ``range``/``months``, the
    first date checked with its label as a scene is, the others against it."""
    opts = SeriesOptions.from_config(cfg.get("series"))
    option = f"data.splits.{split}.images" if items is None else f"data.splits.{split} (STAC items)"
    files = options.get("files")
    template = spec.get("labels")
    if template is not None and "{date}" in str(template):
        raise GeosegError(f"data.splits.{split}.labels: a series has one label; use {{scene}}, not {{date}}.")
    places = local_places(root, spec, files, opts, option) if items is None else stac_places(
        items, files, opts, spec, root)  # fmt: skip
    scenes = []
    bar = tqdm(places, desc=f"inspect {split}", unit="series", disable=not (progress and sys.stderr.isatty()))
    for title, label, dates in bar:
        keep = keep_dates([iso for _, iso, _, _ in dates], opts, option)
        if not keep:
            log.warning("series '%s' has no date in data.series.range/months; it is left out", title)
            continue
        scene = inspect_scene(dates[keep[0]][2], label, **options)
        found, dtype = inspect_dates(
            [dates[k] for k in keep], files, options.get("nodata"), options.get("grid", "finest"), scene.grid,
            scene.band_names, opts.mask.band, opts.mask.invalid,
        )  # fmt: skip
        scenes.append(dataclasses.replace(
            scene, dates=found, dtype=stack_dtype([scene.dtype, dtype]), title=title,
            min_valid_dates=opts.min_valid_dates,
        ))  # fmt: skip
    if not scenes:
        raise GeosegError(
            f"data.series keeps no date of any scene of {option}; widen data.series.range/months."
        )
    counts = sorted({len(s.dates) for s in scenes})
    shown = counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    log.info("%s: %d series of %s dates (%s ... %s)", split, len(scenes), shown,
             scenes[0].dates[0].label, scenes[0].dates[-1].label)  # fmt: skip
    return scenes


Place = tuple[str, str | None, list[tuple[str, str | None, tuple[str, ...], str | None]]]


def local_places(
    root: str, spec: Mapping[str, Any], files: Any, opts: SeriesOptions, option: str
) -> list[Place]:
    """(name, label, dates) of each place a ``{date}`` pattern finds under ``root``."""
    first_value = files[0].name if files else None
    out = []
    for group in find_series(root, spec["images"], files, opts, option):
        texts = [t for t, _, _ in group]
        isos = series_dates(texts, opts, option)
        title = series_title(group[0][1][0], texts[0], first_value)
        template = spec.get("labels")
        template = None if template is None else str(template).replace("{scene}", title)
        label = label_path(group[0][1], template, root, first_value)
        out.append(
            (title, label, [(t, iso, paths, mask) for (t, paths, mask), iso in zip(group, isos, strict=True)])
        )
    return out


def stac_places(
    items: Sequence[Mapping[str, Any]], files: Any, opts: SeriesOptions, spec: Mapping[str, Any], root: str
) -> list[Place]:
    """(name, label, dates) of each place of STAC ``items`` (``data.series.group``); the label template
    takes ``{scene}`` (the place: its tile code) and ``{item}`` (its first item's id)."""
    out = []
    for name, first_id, dates in item_series(items, files, opts.group, opts.mask.file):
        template, label = spec.get("labels"), None
        if template is not None:
            try:
                label = str(template).format(scene=name, item=first_id)
            except (KeyError, IndexError, ValueError) as err:
                raise GeosegError(
                    f"label template '{template}' uses {err}; for STAC series use {{scene}} or {{item}}."
                ) from None
            label = label if is_url(label) or os.path.isabs(label) else os.path.join(root, label)
        out.append((name, label, dates))
    return out
