"""``geoseg init-data DIR``: look at a folder of GeoTIFFs and write a starter data config for it.

It finds the images and their labels (:mod:`geoseg.data.file_roles`: ``images=`` and ``labels=`` first,
then band counts, then names such as a ``labels``/``masks``/``gt`` folder or a ``_label``, ``_mask``...
suffix; polygons too), the label template that pairs them, the bands (names from the band
descriptions), nodata, the classes found in the labels, and a chip size that fits. Images already split
into ``train/`` and ``val/`` folders keep that split; otherwise every scene is split spatially: the left
part for training, the right ``val_fraction`` for validation. The config inherits every other option
from the shipped ``data/demo.yaml`` (its ``defaults``), so it stays short and the comments say what to
check.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rasterio.enums import Resampling

from geoseg.data.file_roles import (
    LABEL_WORDS,
    MAX_CLASSES,
    RASTER_EXT,
    VECTOR_EXT,
    file_roles,
    folder_files,
    images_by_values,
    named_by_template,
    no_images_error,
    value_problem,
    words,
)
from geoseg.data.rasters import open_raster
from geoseg.errors import GeosegError

SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
CHIP_SIZES = (256, 128, 64, 32)


@dataclass
class SplitDraft:
    """One split of the config: its images glob and label template (None: no labels found)."""

    images: list[str]  # relative to root
    glob: str
    labels: str | None
    note: str | None = None  # why there is no template, or what to check about the one found


@dataclass
class DataDraft:
    """What the folder holds, as the config will say it."""

    root: str
    splits: dict[str, SplitDraft]  # train and val
    by_folder: bool  # the folder's own train/ and val/ split; False: a spatial split of every scene
    band_names: list[str]
    dtype: str
    nodata: float | None
    crs: str
    min_size: tuple[int, int]  # (height, width) of the smallest scene
    classes: list[tuple[int, int]] = field(default_factory=list)  # (code, pixels)
    label_nodata: float | None = None
    vector: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[str]:
        """Every image of the config (a spatial split uses each one in both splits)."""
        return list(dict.fromkeys(i for split in self.splits.values() for i in split.images))

    @property
    def unlabelled(self) -> dict[str, str]:
        """{split: why} for the splits without a label template: such a config cannot train."""
        return {name: split.note or "" for name, split in self.splits.items() if split.labels is None}


def find_files(
    root: str, pattern: str | None = None, template: str | None = None
) -> tuple[list[str], list[str]]:
    """(images, labels) under ``root``, relative and sorted: ``images=`` (``pattern``) and ``labels=``
    (``template``) first, then content and names (:mod:`geoseg.data.file_roles`); an error listing the
    files seen when no image is found."""
    roles = file_roles(root, folder_files(root), pattern)
    named: set[str | None] = set()
    if template is not None:  # the files the template names are labels, whatever their names
        named = {expand_or_none(template, r.path) for r in roles if r.path.lower().endswith(RASTER_EXT)}
        roles = named_by_template(roles, named, template)
    if not pattern:
        roles = images_by_values(root, roles, named)
    images = [r.path for r in roles if r.kind == "image"]
    if not images:
        raise no_images_error(root, roles, pattern)
    return images, [r.path for r in roles if r.kind == "label"]


def image_glob(root: str, images: list[str], labels: list[str]) -> str:
    """The first of ``folder/*.tif``, ``folder/*suffix``, ``folder/prefix*...`` and ``folder/*[!k].tif``
    (no file ending in a label's last letter) that globs every image and no label under ``root``."""
    folders = {os.path.dirname(p) for p in images}
    if len(images) == 1:
        return images[0]
    folder = folders.pop() if len(folders) == 1 else None
    prefix = "**/" if folder is None else f"{folder}/" if folder else ""
    stems = [os.path.basename(p) for p in images]
    suffix = os.path.commonprefix([s[::-1] for s in stems])[::-1]  # noqa: RUF071 - a character suffix
    start = os.path.commonprefix(stems)  # noqa: RUF071 - a character prefix
    ext = os.path.splitext(stems[0])[1]
    last = {os.path.splitext(os.path.basename(p))[0][-1:] for p in labels} - {""}
    patterns = [
        f"{prefix}*{ext}",
        f"{prefix}*{suffix}",
        f"{prefix}{start}*{ext}",
        f"{prefix}{start}*{suffix}",
    ]
    names = {os.path.basename(f) for f in {os.path.dirname(p) for p in images}}
    if folder is None and len(names) == 1 and "" not in names:  # a/images/*.tif, b/images/*.tif
        patterns.insert(1, f"**/{names.pop()}/*{ext}")
    if last and re.fullmatch(r"\w+", "".join(last)):  # images x.tif beside labels x_mask.tif: *[!k].tif
        patterns.append(f"{prefix}{start}*[!{''.join(sorted(last))}]{ext}")
    for pattern in patterns:
        found = glob.glob(os.path.join(glob.escape(root), pattern), recursive=True)
        if {os.path.relpath(p, root) for p in found} == set(images):
            return pattern
    raise no_glob_error(images, labels)


def no_glob_error(images: list[str], labels: list[str]) -> GeosegError:
    """Why no glob picks the images: labels in their folders (move them), or folders too varied."""
    folders = {os.path.dirname(p) for p in images}
    if folders & {os.path.dirname(p) for p in labels}:
        return GeosegError(
            "init-data: the images and labels share a folder and a file ending, so no glob picks the images "
            "alone; move the labels into a folder of their own (e.g. labels/) and run it again"
        )
    return GeosegError(
        f"init-data: no simple glob picks exactly the {len(images)} images in {len(folders)} folders "
        f"(e.g. '{images[0]}'); pass one with images='GLOB' (relative to the folder, e.g. images='**/*.tif')"
    )


def expand(template: str, image: str) -> str:
    """The label path ``template`` gives ``image`` (both relative to root), as a split's labels do."""
    name = os.path.basename(image)
    return os.path.normpath(
        template.format(stem=os.path.splitext(name)[0], name=name, parent=os.path.dirname(image))
    )


def expand_or_none(template: str, image: str) -> str | None:
    """:func:`expand`, or None for a template with an unknown placeholder (checked later, in one line)."""
    try:
        return expand(template, image)
    except (KeyError, IndexError, ValueError):
        return None


def candidate_templates(image: str, label: str) -> list[str]:
    """Templates that would name ``label`` for ``image``: in a labels folder of their own (``{stem}``
    in the file name), or beside each image (``{parent}``, with or without ``{stem}``)."""
    stem = os.path.splitext(os.path.basename(image))[0]
    base = os.path.basename(label)
    out = []
    if stem in base and stem not in os.path.dirname(label):
        out.append(os.path.join(os.path.dirname(label), base.replace(stem, "{stem}", 1)))
    if os.path.dirname(label) == os.path.dirname(image):
        out += [os.path.join("{parent}", base.replace(stem, "{stem}", 1)), os.path.join("{parent}", base)]
    elif stem in base and siblings(os.path.dirname(image), os.path.dirname(label)):  # x/images + x/labels
        out.append(os.path.join("{parent}", "..", os.path.basename(os.path.dirname(label)),
                                base.replace(stem, "{stem}", 1)))  # fmt: skip
    return out


def siblings(images: str, labels: str) -> bool:
    """Whether the folder ``labels`` (named like labels, masks, gt) sits beside the folder ``images``."""
    return (
        bool(images)
        and images != labels
        and os.path.dirname(images) == os.path.dirname(labels)
        and bool(words(os.path.basename(labels)) & LABEL_WORDS)
    )


def label_template(images: list[str], labels: list[str]) -> tuple[str | None, str | None]:
    """(template, note): a ``{stem}``/``{parent}`` template that names every image's label, one fixed
    label file for a single scene, or None with the reason."""
    if not labels:
        return None, "no label files found: no folder named labels/masks/gt, no file named *_label or *_mask"
    known = {os.path.normpath(p) for p in labels}
    if len(images) > 1 or len(labels) == 1:
        for label in labels:
            for template in candidate_templates(images[0], label):
                paired = [expand(template, i) for i in images]
                if all(p in known for p in paired) and len(set(paired)) == len(images):
                    return template, None
    if len(labels) == 1:
        note = None if len(images) == 1 else f"every image is paired with the one label {labels[0]}"
        return labels[0], note
    if len(images) == 1:  # one scene, several candidates: the one sharing most words with the image
        shared = sorted(labels, key=lambda lab: -len(words(lab) & words(images[0])))
        others = ", ".join(shared[1:])
        return shared[0], f"labels: picked {shared[0]} for {images[0]}; the other candidates: {others}"
    return None, (
        f"no {{stem}} or {{parent}} template pairs each image with its own label (looked from {images[0]} "
        f"over {len(labels)} label files)"
    )


def inspect_images(root: str, images: list[str]) -> dict:
    """Bands (names from the descriptions), dtype, nodata, CRS and the smallest size; every image must
    have the first one's band count and CRS."""
    first: dict = {}
    heights, widths = [], []
    for rel in images:
        with open_raster(os.path.join(root, rel), "image", "init-data's folder") as src:
            info = {"count": src.count, "crs": src.crs.to_string() if src.crs else None,
                    "names": [d or f"band{i + 1}" for i, d in enumerate(src.descriptions)],
                    "dtype": src.dtypes[0], "nodata": src.nodata}  # fmt: skip
            heights.append(src.height)
            widths.append(src.width)
        if not first:
            first = info
        elif info["count"] != first["count"] or info["crs"] != first["crs"]:
            raise GeosegError(
                f"init-data: '{rel}' has {info['count']} bands in {info['crs']} but '{images[0]}' has "
                f"{first['count']} in {first['crs']}; pick one kind with images='GLOB' (e.g. "
                "images='*_S2*.tif'), or stack sensors with data.files (docs/multi-file.md)"
            )
    if first["crs"] is None:
        raise GeosegError(
            f"init-data: '{images[0]}' has no CRS; georeference it (gdal_edit.py -a_srs EPSG:...)"
        )
    return {**first, "min_size": (min(heights), min(widths))}


def label_values(root: str, labels: list[str], max_pixels: int = 4_000_000) -> tuple[Counter, float | None]:
    """Pixel counts of each label value over (decimated reads of) the raster labels, and their nodata."""
    counts: Counter = Counter()
    nodata = None
    rasters = [p for p in labels if p.lower().endswith(RASTER_EXT)]
    per_file = max(1, max_pixels // max(1, len(rasters)))
    for rel in rasters:
        with open_raster(os.path.join(root, rel), "label", "init-data's folder") as src:
            scale = max(1.0, (src.height * src.width / per_file) ** 0.5)
            shape = (max(1, int(src.height / scale)), max(1, int(src.width / scale)))
            arr = src.read(1, out_shape=shape, resampling=Resampling.nearest)
            nodata = src.nodata if nodata is None else nodata
        if value_problem(arr) == "holds fractional values":
            raise GeosegError(
                f"init-data: label '{rel}' holds fractional values; a label is a map of class codes"
            )
        values, n = np.unique(arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr, return_counts=True)
        counts.update({int(v): int(c) for v, c in zip(values, n, strict=True)})
        if len(counts) > MAX_CLASSES:
            raise GeosegError(
                f"init-data: '{rel}' holds more than {MAX_CLASSES} distinct values; it does not look like a "
                "class map (if it is an image, name the images with images='GLOB')"
            )
    if nodata is not None:
        counts.pop(int(nodata), None)
    return counts, nodata


def chip_size_for(min_size: tuple[int, int], val_fraction: float) -> int:
    """The largest of 256/128/64/32 px that fits the val strip (``val_fraction`` of the narrowest scene;
    1 for a split by folders, whose val scenes are whole)."""
    fits = [c for c in CHIP_SIZES if c <= min(min_size[0], int(min_size[1] * val_fraction))]
    if not fits:
        raise GeosegError(
            f"init-data: the smallest scene ({min_size[0]}x{min_size[1]} px) leaves a val strip narrower "
            f"than 32 px at val_fraction={val_fraction}; raise val_fraction or split by scenes by hand"
        )
    return fits[0]


def folder_splits(images: list[str]) -> dict[str, list[str]] | None:
    """{"train": [...], "val": [...]} when the images lie in folders named for both splits (``train/``
    and ``val/``, ``training/`` and ``validation/``, at any depth); else None."""
    groups: dict[str, list[str]] = {}
    for rel in images:
        parts = [SPLIT_FOLDERS.get(part.lower()) for part in os.path.dirname(rel).split(os.sep)]
        split = next((p for p in parts if p), None)
        if split:
            groups.setdefault(split, []).append(rel)
    return groups if {"train", "val"} <= set(groups) else None


def checked_template(root: str, template: str, images: list[str]) -> str:
    """``labels=``: the label template given by hand, checked to name an existing file for each image."""
    for image in images:
        try:
            path = expand(template, image)
        except (KeyError, IndexError, ValueError) as err:
            raise GeosegError(
                f"init-data: labels='{template}' uses {err}; use {{stem}}, {{name}} or {{parent}}"
            ) from None
        if not os.path.isfile(os.path.join(root, path)):
            raise GeosegError(
                f"init-data: labels='{template}' names '{path}' for image '{image}', which is no file; give "
                "the label path relative to the folder with {stem}, {name} or {parent} of each image"
            )
    return template


def split_draft(
    root: str, images: list[str], labels: list[str], pattern: str | None, template: str | None
) -> SplitDraft:
    """The images glob and label template of one split's ``images`` (``pattern`` and ``template`` as
    given to init-data, when given)."""
    glob_ = pattern or image_glob(root, images, labels)
    if template is not None:
        return SplitDraft(images, glob_, checked_template(root, template, images))
    return SplitDraft(images, glob_, *label_template(images, labels))


def draft_splits(
    root: str, images: list[str], label_files: list[str], pattern: str | None, labels: str | None
) -> tuple[dict[str, SplitDraft], bool, list[str]]:
    """(splits, by folder, notes): the folder's own train and val folders when it has both, else every
    image in both splits (split spatially by the config's regions)."""
    groups = folder_splits(images)
    notes = []
    if groups is not None:
        splits = {
            split: split_draft(root, groups[split], label_files, None, labels) for split in ("train", "val")
        }
        left = [i for i in images if i not in groups["train"] + groups["val"]]
        if left:
            notes.append(f"{len(left)} image(s) outside the train and val folders are not in the config "
                         f"(e.g. {left[0]}); predict or evaluate them on their own")  # fmt: skip
    else:
        both = split_draft(root, images, label_files, pattern, labels)
        splits = {"train": both, "val": both}
    for name, split in splits.items():
        if split.labels is not None and split.note and split.note not in notes:
            notes.append(f"{name}: {split.note}" if groups is not None else split.note)
    return splits, groups is not None, notes


def draft(
    root: str, val_fraction: float = 0.2, pattern: str | None = None, labels: str | None = None
) -> DataDraft:
    """Everything the starter config says about ``root``; ``pattern`` (a glob relative to it) picks the
    images when the folder holds several kinds, ``labels`` (a template) names their labels."""
    if not os.path.isdir(root):
        raise GeosegError(f"init-data: '{root}' is not a folder; pass the folder that holds your GeoTIFFs")
    if not 0.05 <= val_fraction <= 0.5:
        raise GeosegError(f"init-data: val_fraction={val_fraction} must be between 0.05 and 0.5")
    images, label_files = find_files(root, pattern, labels)
    splits, by_folder, notes = draft_splits(root, images, label_files, pattern, labels)
    info = inspect_images(root, list(dict.fromkeys(i for split in splits.values() for i in split.images)))
    out = DataDraft(
        root=os.path.abspath(root), splits=splits, by_folder=by_folder, band_names=info["names"],
        dtype=info["dtype"], nodata=info["nodata"], crs=info["crs"], min_size=info["min_size"], notes=notes,
    )  # fmt: skip
    templates = {split.labels for split in splits.values() if split.labels}
    out.vector = any(t.lower().endswith(VECTOR_EXT) for t in templates)
    rasters = sorted({expand(split.labels, i) for split in splits.values() if split.labels
                      and not split.labels.lower().endswith(VECTOR_EXT) for i in split.images})  # fmt: skip
    if rasters:
        counts, out.label_nodata = label_values(root, rasters)
        out.classes = sorted(counts.items())
    elif out.vector:
        out.classes = [(0, 0), (1, 0)]  # background and every polygon (data.vector.burn)
    return out


def quoted(value: str) -> str:
    """A YAML double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_lines(d: DataDraft, val_fraction: float) -> list[str]:
    """The ``splits:`` block: the folder's own train/val split, or a spatial split of every scene."""
    cut = round(1 - val_fraction, 3)
    regions = {"train": "null", "val": "null"} if d.by_folder else {
        "train": f"[0, 0, {cut:g}, 1]", "val": f"[{cut:g}, 0, 1, 1]"}  # fmt: skip
    head = (
        "# the folder's own split: the scenes in its train folder train, those in its val folder validate"
        if d.by_folder
        else f"# a spatial split of every scene: the left {cut:g} trains, the right {val_fraction:g} "
        "validates"
    )
    lines = [head, "splits:"]
    for name, split in d.splits.items():
        labels = quoted(split.labels) if split.labels else "null"
        check = "" if split.labels else "  # CHECK: no labels found, so it cannot train (see the NOTE below)"
        lines.append(
            f"  {name}: {{images: {quoted(split.glob)}, labels: {labels}, region: {regions[name]}}}{check}"
        )
    return lines


def render(d: DataDraft, val_fraction: float, chip_size: int, command_hint: str) -> str:
    """The YAML text of the starter config, with comments on what was found and what to check."""
    bands = ", ".join(d.band_names)
    pad = " " * 16
    nodata = f"null{pad}# the images declare {d.nodata:g}" if d.nodata is not None else (
        f"null{pad}# CHECK: the images declare none; set the value of empty pixels")  # fmt: skip
    total = sum(n for _, n in d.classes) or 1
    lines = [
        f"# Data config for {d.root}, written by `geoseg init-data`: {len(d.images)} scene(s), "
        f"{len(d.band_names)} {d.dtype} band(s), {d.crs}.",
        f"# Use it with: {command_hint}",
        "# Lines marked CHECK are guesses to confirm; every other option keeps the shipped default",
        "# (data/demo.yaml; `geoseg train --help` lists them with what they do).",
        "defaults:",
        "  - demo",
        "  - _self_",
        f"root: {quoted(d.root)}",
        "demo: null",
        *split_lines(d, val_fraction),
        f"bands: null                 # all {len(d.band_names)}: [{bands}] (names or 1-based indices)",
        f"nodata: {nodata}",
    ]
    if d.label_nodata is not None:
        lines.append(f"label_nodata: {d.label_nodata:g}             # the labels declare it")
    lines.append("classes:                    # CHECK the names and colours: the codes found in the labels")
    for code, pixels in d.classes:
        share = f"  # {100 * pixels / total:.2g}% of the labelled pixels" if pixels else ""
        if code < 0 or code == 255:
            share += "; CHECK: often the nodata code (then set label_nodata and drop it here)"
        name = ("background" if code == 0 else "feature") if d.vector else f"class_{code}"
        lines.append(f"  - {{code: {code}, name: {name}}}{share}")
    if not d.classes:
        lines.append("  - {code: 0, name: background}  # CHECK: no labels were read")
    fits = "the smallest scene" if d.by_folder else "the val strip of the smallest scene"
    lines.append(f"chip_size: {chip_size}               # px; fits {fits} "
                 f"({d.min_size[0]}x{d.min_size[1]} px)")  # fmt: skip
    lines += [f"# NOTE: {n}" for n in d.notes]
    lines += [f"# NOTE: no labels for {name}: {why}" for name, why in d.unlabelled.items()]
    return "\n".join(lines) + "\n"
