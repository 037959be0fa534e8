"""The options of scenes whose bands come from several files: ``data.files``, ``data.grid``, ``data.invalid``.

Each is parsed once, where the config enters, into plain checked values; see
:mod:`geoseg.data.scene_paths` for how ``{file}`` patterns find the files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rasterio.enums import Resampling

from geoseg.config import is_whole
from geoseg.errors import GeosegError

RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode", "min", "max")
ENTRY_KEYS = ("name", "bands", "nodata", "resampling")


@dataclass(frozen=True)
class FileEntry:
    """One entry of ``data.files``: the ``{file}`` value and how its bands join the stack."""

    name: str
    bands: tuple[int, ...] | None = None  # 1-based within the file; None = all of them
    nodata: float | None = None  # overrides the file's own (and data.nodata) for these bands
    resampling: str = "bilinear"  # onto the reference grid; use nearest for categorical bands

    @property
    def method(self) -> Resampling:
        return Resampling[self.resampling]


def file_name(value: Any) -> str | None:
    """A ``{file}`` value as text: a name, or a whole number the command line or YAML read as one
    (Landsat 7's ``..._10.tif``: ``data.files=[10,20]``); None for anything else (1.5, true, "")."""
    if isinstance(value, str):
        return value or None
    return str(value) if is_whole(value) else None


def _entry(value: Any, index: int) -> FileEntry:
    where = f"data.files[{index}]"
    if file_name(value) is not None:
        return FileEntry(file_name(value))
    name = file_name(value.get("name")) if isinstance(value, Mapping) else None
    if name is None:
        raise GeosegError(
            f"{where} must be a file name like B4 or a mapping {{name, bands, nodata, resampling}}, "
            f"got {value!r}{_quote_hint(value)}."
        )
    unknown = sorted(set(value) - set(ENTRY_KEYS))
    if unknown:
        raise GeosegError(f"{where} ({name}) has unknown keys {unknown}; use {list(ENTRY_KEYS)}.")
    bands = value.get("bands")
    if bands is not None:
        if isinstance(bands, int) and not isinstance(bands, bool):
            bands = [bands]
        if isinstance(bands, (str, Mapping)) or not isinstance(bands, Iterable) or not list(bands):
            raise GeosegError(f"{where}.bands must be a list of 1-based band indices, got {bands!r}.")
        bands = list(bands)
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands):
            raise GeosegError(f"{where}.bands must be 1-based band indices (1, 2, ...), got {bands}.")
        bands = tuple(bands)
    nodata = value.get("nodata")
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, (int, float))):
        raise GeosegError(f"{where}.nodata must be a number (or null = the file's own), got {nodata!r}.")
    resampling = value.get("resampling") or "bilinear"
    if resampling not in RESAMPLING:
        raise GeosegError(f"{where}.resampling '{resampling}' is not one of {', '.join(RESAMPLING)}.")
    return FileEntry(name, bands, None if nodata is None else float(nodata), resampling)


def _quote_hint(value: Any) -> str:
    """For a number that is no whole number (1.5, 1e3): quote it to keep it a name."""
    return f'; quote a name that looks like a fraction: "{value}"' if isinstance(value, float) else ""


def parse_files(value: Any) -> tuple[FileEntry, ...] | None:
    """``data.files`` as checked entries (None when the scenes are single files)."""
    if value is None:
        return None
    if isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
        raise GeosegError(f"data.files must be a list of file names (e.g. [B2, B3, B4]), got {value!r}.")
    entries = tuple(_entry(v, i) for i, v in enumerate(value))
    if not entries:
        raise GeosegError(
            "data.files is empty; list the {file} values (e.g. [B2, B3, B4]) or set it to null."
        )
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GeosegError(f"data.files lists {dupes} more than once; each file joins the stack once.")
    return entries


def check_grid_rule(grid: Any, files: Sequence[FileEntry] | None) -> str:
    """``data.grid``: finest | first | the name of one of ``data.files``."""
    grid = "finest" if grid is None else file_name(grid) or grid
    names = [e.name for e in files or ()]
    if not isinstance(grid, str) or (grid not in ("finest", "first") and grid not in names):
        raise GeosegError(f"data.grid must be finest, first or one of data.files {names}, got {grid!r}.")
    return grid


def check_invalid_rule(rule: Any) -> str:
    """``data.invalid``: any (a pixel is invalid where any band is nodata) | all (where every band is)."""
    rule = "any" if rule is None else rule
    if rule not in ("any", "all"):
        raise GeosegError(f"data.invalid must be 'any' or 'all', got {rule!r}.")
    return rule
