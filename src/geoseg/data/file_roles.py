"""What each file of a folder is for ``geoseg init-data``: an image or a label, and why.

The user's word wins: ``images=`` (a glob) names the images, ``labels=`` (a path template) their labels,
whatever the files are called. Then what a file holds: a raster of several bands is an image (a label is
one band of class codes), and polygons are labels. Names come last: a label word (``mask``, ``gt``...)
in the file name makes a label unless an image word follows it (``road_mask_input.tif``), and a label
folder (``labels/``) does when the file name holds no label word. When the names leave no image, the
one-band files they took for labels whose values are no class map (fractions, too many values) are
images. When there is still none, the error lists the files seen and what each was taken for.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from geoseg.errors import GeosegError

RASTER_EXT = (".tif", ".tiff")
VECTOR_EXT = (".geojson", ".gpkg", ".shp", ".fgb")
LABEL_WORDS = {"label", "labels", "mask", "masks", "gt", "truth", "groundtruth", "annotation", "annotations",
               "lulc", "labelhand", "target", "targets", "seg", "segmentation"}  # fmt: skip
IMAGE_WORDS = {"image", "images", "img", "imgs", "input", "inputs", "scene", "scenes", "rgb", "optical",
               "raw"}  # fmt: skip
MAX_CLASSES = 64  # more distinct label values than this: not a class map (continuous values?)
SHOWN = 5  # files listed by the error that finds no image


@dataclass(frozen=True)
class Role:
    """What init-data took one file for: ``image``, ``label`` or ``other`` (left out), and why."""

    path: str  # relative to the folder
    kind: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind} ({self.why})"


def words(path: str) -> set[str]:
    """Lower-case words of a relative path's folders and file stem (split at ``_ - . /``)."""
    return set(ordered_words(path))


def ordered_words(path: str) -> list[str]:
    """The words of :func:`words`, in path order."""
    stem = os.path.splitext(path)[0].lower()
    return [w for w in re.split(r"[_\-./\\\s]+", stem) if w]


def folder_files(root: str) -> list[str]:
    """The rasters and polygon files under ``root``, relative and sorted."""
    return sorted(
        os.path.relpath(p, root)
        for p in glob.glob(os.path.join(glob.escape(root), "**", "*"), recursive=True)
        if p.lower().endswith(RASTER_EXT + VECTOR_EXT) and os.path.isfile(p)
    )


def is_raster(path: str) -> bool:
    return path.lower().endswith(RASTER_EXT)


def name_role(path: str) -> Role:
    """A raster's role by its name alone: the last label or image word of its file name, else a label
    word in its folders' names, else an image."""
    stem = ordered_words(os.path.basename(path))
    said = [w for w in stem if w in LABEL_WORDS or w in IMAGE_WORDS]
    label_words = [w for w in said if w in LABEL_WORDS]
    if said and said[-1] in LABEL_WORDS:
        return Role(path, "label", f"'{said[-1]}' in its name")
    if label_words:
        return Role(path, "image", f"'{said[-1]}' after '{label_words[-1]}' in its name")
    folder = sorted(words(os.path.dirname(path)) & LABEL_WORDS)
    if folder:
        return Role(path, "label", f"in a '{folder[0]}' folder")
    return Role(path, "image", "no label word in its name")


def band_count(path: str) -> int | None:
    """The band count of a raster, or None when it cannot be opened (reported where it is read)."""
    try:
        with rasterio.open(path) as src:
            return src.count
    except (RasterioError, OSError):
        return None


def content_or_name_role(root: str, path: str) -> Role:
    """A raster of several bands is an image whatever its name; a one-band raster goes by its name."""
    bands = band_count(os.path.join(root, path))
    if bands is not None and bands > 1:
        return Role(path, "image", f"{bands} bands; a label has one")
    return name_role(path)


def file_roles(root: str, files: Iterable[str], pattern: str | None = None) -> list[Role]:
    """The role of each file: polygons are labels; with ``images=`` (``pattern``) the rasters it matches
    are images and the others labels (named like one) or left out; else by content, then by name."""
    picked = None
    if pattern:
        picked = {os.path.relpath(p, root) for p in glob.glob(os.path.join(glob.escape(root), pattern),
                                                               recursive=True)}  # fmt: skip
    roles = []
    for path in files:
        if not is_raster(path):
            roles.append(Role(path, "label", "polygons"))
        elif picked is None:
            roles.append(content_or_name_role(root, path))
        elif path in picked:
            roles.append(Role(path, "image", f"matched images='{pattern}'"))
        else:
            named = name_role(path)
            roles.append(named if named.kind == "label" else Role(path, "other", "outside images="))
    return roles


def named_by_template(roles: list[Role], named: set[str | None], template: str) -> list[Role]:
    """``labels=`` decides: the files it names are labels; when the names left no image, every other
    raster taken for a label by its name is an image."""
    out = [Role(r.path, "label", f"named by labels='{template}'") if r.path in named else r for r in roles]
    if any(r.kind == "image" for r in out):
        return out
    return [
        Role(r.path, "image", f"{r.why}, but not named by labels=")
        if r.kind == "label" and is_raster(r.path) and r.path not in named
        else r
        for r in out
    ]


def value_problem(values: np.ndarray) -> str | None:
    """Why these label values are no class map (fractions, too many distinct values), or None."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.dtype.kind == "f" and not np.allclose(finite % 1, 0):
        return "holds fractional values"
    if len(np.unique(finite)) > MAX_CLASSES:
        return f"holds more than {MAX_CLASSES} distinct values"
    return None


def sample(path: str, size: int = 256) -> np.ndarray:
    """Band 1 of a raster, read at most ``size`` px a side (nearest: no new values)."""
    with rasterio.open(path) as src:
        scale = max(1.0, max(src.height, src.width) / size)
        shape = (max(1, int(src.height / scale)), max(1, int(src.width / scale)))
        return src.read(1, out_shape=shape, resampling=Resampling.nearest)


def images_by_values(root: str, roles: list[Role], named: set[str | None]) -> list[Role]:
    """When there is no image: the rasters taken for labels by their name (not ``named`` by labels=)
    whose values are no class map (continuous: an image's) become images."""
    if any(r.kind == "image" for r in roles):
        return roles
    out = []
    for role in roles:
        problem = None
        if role.kind == "label" and is_raster(role.path) and role.path not in named:
            try:
                problem = value_problem(sample(os.path.join(root, role.path)))
            except (RasterioError, OSError):
                problem = None
        out.append(Role(role.path, "image", f"{role.why}, but it {problem}") if problem else role)
    return out


def no_images_error(root: str, roles: list[Role], pattern: str | None) -> GeosegError:
    """No image found: the files seen (a few, with the count), what each was taken for and why."""
    if not roles:
        return GeosegError(
            f"init-data: no GeoTIFF images (*.tif, *.tiff) under '{root}'; pass the folder of your scenes"
        )
    shown = "; ".join(str(r) for r in roles[:SHOWN])
    more = f"; and {len(roles) - SHOWN} more" if len(roles) > SHOWN else ""
    first = next((r.path for r in roles if is_raster(r.path)), "scene.tif")
    head = f"images={pattern!r} matches no GeoTIFF" if pattern else "no GeoTIFF was taken for an image"
    return GeosegError(
        f"init-data: {head} under '{root}'; it holds {len(roles)} file(s): {shown}{more}. Name the images "
        f"with images='GLOB' (relative to the folder, e.g. images='{first}') and, if needed, their labels "
        "with labels='TEMPLATE' (e.g. labels='{stem}_label.tif')"
    )
