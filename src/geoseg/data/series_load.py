"""Finding and inspecting a split's series scenes (a ``{date}`` placeholder in its ``images``)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Mapping
from typing import Any

from tqdm import tqdm

from geoseg.data.scene_paths import label_path, scene_name
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.data.series import SeriesOptions, find_series, keep_dates, series_dates
from geoseg.data.series_scene import inspect_dates
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
    progress: bool = True,
) -> list[Scene]:  # fmt: skip
    """The series scenes of ``split``: the dates of each place (``data.series``), kept by
    ``range``/``months``, the first date checked with its label as a scene is, the others against it."""
    opts = SeriesOptions.from_config(cfg.get("series"))
    option = f"data.splits.{split}.images"
    files = options.get("files")
    first_value = files[0].name if files else None
    groups = find_series(root, spec["images"], files, opts, option)
    scenes = []
    bar = tqdm(groups, desc=f"inspect {split}", unit="series", disable=not (progress and sys.stderr.isatty()))
    for group in bar:
        texts = [t for t, _, _ in group]
        isos = series_dates(texts, opts, option)
        keep = keep_dates(isos, opts, option)
        first_path = group[0][1][0]
        if not keep:
            log.warning("series '%s' has no date in data.series.range/months; it is left out",
                        series_title(first_path, texts[0], first_value))  # fmt: skip
            continue
        text, paths, _ = group[keep[0]]
        title = series_title(paths[0], text, first_value)
        template = spec.get("labels")
        if template is not None and "{date}" in str(template):
            raise GeosegError(
                f"data.splits.{split}.labels: a series has one label; use {{scene}}, not {{date}}."
            )
        template = None if template is None else str(template).replace("{scene}", title)
        label = label_path(paths, template, root, first_value)
        scene = inspect_scene(paths, label, **options)
        dates, dtype = inspect_dates(
            [(texts[k], isos[k], group[k][1], group[k][2]) for k in keep],
            files, options.get("nodata"), options.get("grid", "finest"), scene.grid, scene.band_names,
            opts.mask.band, opts.mask.invalid,
        )  # fmt: skip
        scenes.append(dataclasses.replace(
            scene, dates=dates, dtype=stack_dtype([scene.dtype, dtype]), title=title,
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
