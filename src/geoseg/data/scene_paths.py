"""Finding a split's scenes: image globs (with a ``{file}`` placeholder), manifests and label templates.

``images: "LC08_*_SR_{file}.TIF"`` with ``files: [B2, B3, B4]`` finds one scene per match of the
pattern with ``{file}`` = ``B2``; the scene's other files are the same match with ``B3`` and ``B4``
put in, so every wildcard keeps the text it matched for the first file.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence

from geoseg.data.band_files import FileEntry
from geoseg.data.remote import file_name, has_wildcard, is_remote, join, parent, shown, stem
from geoseg.errors import GeosegError

PLACEHOLDER = "{file}"
log = logging.getLogger(__name__)


def _tokens(pattern: str) -> list[tuple[str, str]]:
    """The pattern as (kind, text) tokens: literal, wild (a glob wildcard) or file (the placeholder)."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith(PLACEHOLDER, i):
            out.append(("file", PLACEHOLDER))
            i += len(PLACEHOLDER)
        elif pattern.startswith("**", i):
            out.append(("wild", "**"))
            i += 2
        elif pattern[i] in "*?":
            out.append(("wild", pattern[i]))
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            out.append(("wild", pattern[i : end + 1]))
            i = end + 1
        else:
            out.append(("literal", pattern[i]))
            i += 1
    return out


def _regex(tokens: list[tuple[str, str]], first: str) -> re.Pattern:
    parts = []
    for kind, text in tokens:
        if kind == "file":
            parts.append(re.escape(first))
        elif kind == "literal":
            parts.append(re.escape(text))
        elif text == "**":
            parts.append("(.*)")
        elif text == "*":
            parts.append("([^/]*)")
        elif text == "?":
            parts.append("([^/])")
        else:
            body = text[1:-1]
            parts.append("([" + ("^" + body[1:] if body.startswith("!") else body) + "])")
    return re.compile("".join(parts) + r"\Z")


def _fill(tokens: list[tuple[str, str]], groups: Sequence[str], value: str) -> str:
    out, g = [], iter(groups)
    for kind, text in tokens:
        out.append(value if kind == "file" else next(g) if kind == "wild" else text)
    return "".join(out)


def scene_name(first_path: str, first_value: str | None) -> str:
    """A scene's name: the first file's stem without its ``{file}`` value (``X_SR_B2`` -> ``X_SR``)."""
    name_stem = stem(first_path)
    if not first_value or first_value not in name_stem:
        return name_stem
    head, _, tail = name_stem.rpartition(first_value)
    name = (
        head.rstrip("_-. ") + ("_" if head.strip("_-. ") and tail.strip("_-. ") else "") + tail.lstrip("_-. ")
    )
    return name or name_stem


def glob_files(pattern: str, option: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """The files ``pattern`` matches (ending in one of ``suffixes``, when given), sorted; folders it
    matches (a folder named ``x.tif``) are left out with a warning naming ``option``."""
    found = sorted(glob.glob(pattern, recursive=True))
    if suffixes:
        found = [p for p in found if p.lower().endswith(suffixes)]
    folders = [p for p in found if os.path.isdir(p)]
    if folders:
        log.warning("%s '%s' matches %d folder(s) (e.g. '%s'), left out: only files are scenes",
                    option, pattern, len(folders), folders[0])  # fmt: skip
    return [p for p in found if not os.path.isdir(p)]


def expand_pattern(pattern: str, files: Sequence[FileEntry] | None, option: str) -> list[tuple[str, ...]]:
    """Each scene's file paths (stack order) for a glob ``pattern``, with ``{file}`` filled from ``files``.

    ``option`` names where the pattern came from, for the messages.
    """
    if not isinstance(pattern, str):
        hint = (
            "; for bands in several files put a {file} placeholder in the pattern and list the files "
            'in data.files (e.g. images: "scene_{file}.tif", files: [B2, B3, B4])'
            if isinstance(pattern, Iterable) and not isinstance(pattern, Mapping)
            else ""
        )
        raise GeosegError(f"{option} must be one glob pattern (a string), got {pattern!r}{hint}.")
    has = PLACEHOLDER in pattern
    if is_remote(pattern) and has_wildcard(pattern):
        raise GeosegError(
            f"{option} '{shown(pattern)}' is a URL with a wildcard, which cannot be listed; name the files "
            "(a {file} placeholder and data.files for bands in several files), list them in a "
            "data.manifest CSV, or find them with data.stac."
        )
    if has and not files:
        raise GeosegError(
            f"{option} '{pattern}' has a {PLACEHOLDER} placeholder but data.files is not set; "
            "list the values it takes, e.g. data.files=[B2,B3,B4]."
        )
    if files and not has:
        raise GeosegError(
            f"data.files is set but {option} '{pattern}' has no {PLACEHOLDER} placeholder; "
            f"write where the file name goes, e.g. 'scene_{PLACEHOLDER}.tif'."
        )
    if not files:
        return [(pattern,)] if is_remote(pattern) else [(p,) for p in glob_files(pattern, option)]
    if is_remote(pattern):  # no listing: the scene is the pattern with each data.files value put in
        return [tuple(pattern.replace(PLACEHOLDER, e.name) for e in files)]
    tokens = _tokens(pattern)
    first = files[0].name
    regex = _regex(tokens, first)
    scenes = []
    for path in glob_files(pattern.replace(PLACEHOLDER, glob.escape(first)), option):
        match = regex.match(path)
        if match is None:  # cannot happen for a path glob matched; be safe
            continue
        paths = tuple(_fill(tokens, match.groups(), e.name) for e in files)
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise GeosegError(
                f"scene '{scene_name(path, first)}' has no file '{missing[0]}' for data.files "
                f"'{files[paths.index(missing[0])].name}'; add the file or drop the scene{zeros_hint(files)}."
            )
        scenes.append(paths)
    return scenes


def zeros_hint(files: Sequence[FileEntry] | None) -> str:
    """A note for ``data.files`` entries that are numbers: YAML reads ``01`` as 1, losing the zero."""
    if not any(e.name.isdigit() for e in files or ()):
        return ""
    return " (YAML reads a number such as 01 as 1: quote file names with leading zeros, e.g. '01')"


def manifest_images(cell: str, base: str, files: Sequence[FileEntry] | None, where: str) -> tuple[str, ...]:
    """The ``image`` cell of a manifest row: one path, or several separated by ``;`` in stack order."""
    paths = tuple(join(base, p.strip()) for p in cell.split(";") if p.strip())
    if not paths:
        raise GeosegError(f"{where} has an empty image cell.")
    if files is not None and len(paths) != len(files):
        raise GeosegError(
            f"{where} lists {len(paths)} image files but data.files has {len(files)} entries "
            f"({[e.name for e in files]}); list one file per entry, separated by ';'."
        )
    return paths


def label_path(images: Sequence[str], template: str | None, root: str, first_value: str | None) -> str | None:
    """The label of a scene from ``template``: ``{stem}``, ``{name}`` and ``{parent}`` of its first file,
    and ``{scene}``, the scene's name (the first file's stem without its ``{file}`` value)."""
    if template is None:
        return None
    first = images[0]
    try:
        name = template.format(
            stem=stem(first),
            name=file_name(first),
            parent=parent(first),
            scene=scene_name(first, first_value),
        )
    except (KeyError, IndexError, ValueError) as err:
        raise GeosegError(
            f"label template '{template}' uses {err}; use {{stem}}, {{name}}, {{parent}} or {{scene}}."
        ) from None
    return join(root, name)


ScenePaths = tuple[tuple[str, ...], str | None]  # (image files in stack order, label or None)


def find_scene_files(
    root: str, images: str, labels: str | None, files: Sequence[FileEntry] | None = None, split: str = "train"
) -> list[ScenePaths]:
    """Glob ``images`` under ``root`` (``{file}`` filled from ``files``); pair each scene with its label."""
    option = f"data.splits.{split}.images"
    if isinstance(images, str):
        images = join(root, images)
    found = expand_pattern(images, files, option)
    if not found:
        raise GeosegError(f"no image matches '{images}'; check data.root and {option}{zeros_hint(files)}.")
    first = files[0].name if files else None
    return [(paths, label_path(paths, labels, root, first)) for paths in found]


def read_manifest(path: str, split: str, files: Sequence[FileEntry] | None = None) -> list[ScenePaths]:
    """Rows of a CSV manifest (columns ``image``, optional ``label`` and ``split``) for one split.

    The ``image`` cell may list several files separated by ``;`` (a scene whose bands are in several files).
    """
    if not os.path.exists(path):
        raise GeosegError(f"data.manifest not found: '{path}'.")
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a BOM from Excel is fine
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as err:
        raise GeosegError(
            f"manifest '{path}' is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 CSV."
        ) from None
    if not rows or "image" not in rows[0]:
        raise GeosegError(f"manifest '{path}' needs a header with an 'image' column (and 'label', 'split').")
    out = []
    for line, row in enumerate(rows, start=2):
        if row.get("split", split) != split:
            continue
        label = row.get("label") or None
        images = manifest_images(row["image"] or "", base, files, f"manifest '{path}' line {line}")
        out.append((images, None if label is None else join(base, label)))
    if not out:
        raise GeosegError(f"manifest '{path}' has no rows for split '{split}'.")
    return out


def warn_bands_as_scenes(scenes: Sequence) -> None:
    """Warn when single-band scenes on one grid differ only in a number: they look like bands of one scene."""
    groups: dict[tuple, list[str]] = {}
    for scene in scenes:
        if len(scene.bands) != 1 or scene.grid is None:
            continue
        key = (scene.grid, re.sub(r"\d+", "#", stem(scene.image)))
        groups.setdefault(key, []).append(scene.image)
    for paths in groups.values():
        if len(paths) > 1:
            listed = ", ".join(f"'{file_name(p)}'" for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
            log.warning(
                "%d single-band images (%s) share one grid and differ only in a number: each is trained as a "
                "scene of its own with a 1-band model. If they are the bands of one scene, stack them: put "
                "{file} where the band name goes in the images pattern and list the names in data.files "
                "(docs/multi-file.md).", len(paths), listed,
            )  # fmt: skip
