"""Scenes of many dates: the ``{date}`` placeholder, date parsing, per-date masks and date selection.

``images: "T33TWM_{date}_{file}.tif"`` groups the files of one place by date: every match of the
pattern with the date text taken out is one scene, and each distinct date text one of its dates.
The date text is parsed as a calendar date (``20240601``, ``2024-06-01``, ``2024_06_01``,
``2024.06.01``, ``20240601T101031``, or ``series.date_format``), or read as an order (``0``, ``1``,
``2``: files that carry an order, not a date), optionally given calendar dates by ``series.dates``.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.data.band_files import FileEntry
from geoseg.data.remote import file_name, is_remote, join, parent, shown, stem
from geoseg.errors import GeosegError

DATE = "{date}"
FILE = "{file}"
SELECT_RULES = ("all", "clearest", "even", "random")
GROUPS = ("tile", "footprint")  # how STAC items make series: by their tile code, or by one footprint
_AUTO_FORMATS = ("%Y%m%d", "%Y-%m-%d", "%Y_%m_%d", "%Y.%m.%d")


def is_series_pattern(images: Any) -> bool:
    """Whether a split's ``images`` pattern is a series (has a ``{date}`` placeholder)."""
    return isinstance(images, str) and DATE in images


@dataclass(frozen=True)
class MaskOptions:
    """``data.series.mask``: where each date's validity mask is and which of its codes mean invalid."""

    file: str | None = None  # a {file} value: the date's file with that value put in (Sentinel-2's SCL)
    path: str | None = None  # or a template under data.root with {date} {stem} {parent} {scene}
    band: int = 1  # 1-based band of the mask file (of the date's own image when file and path are null)
    invalid: tuple[float, ...] = ()  # codes that mean "invalid" (SCL: 0 1 3 8 9 10)

    @property
    def given(self) -> bool:
        return bool(self.invalid)


@dataclass(frozen=True)
class SeriesOptions:
    """``data.series``, parsed and checked once."""

    date_format: str = "auto"  # auto | order | a strptime format such as %Y%j
    dates: tuple[str, ...] | None = None  # calendar dates of the series positions (files with an order)
    mask: MaskOptions = MaskOptions()
    min_valid_dates: int = 1  # a pixel is trained on where its label is valid and >= this many dates are
    select: str = "all"  # all | clearest | even | random (per chip in training, even elsewhere)
    count: int | None = None  # dates per chip when select is not all; None = every date (ragged: padded)
    range: tuple[str, str] | None = None  # keep dates in [start, end] (ISO)
    months: tuple[int, ...] | None = None  # keep dates in these months (a season)
    group: str | None = None  # STAC items as series: grouped by tile | footprint, dated by their datetime

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> SeriesOptions:
        cfg = dict(cfg or {})
        known = {
            "date_format",
            "dates",
            "mask",
            "min_valid_dates",
            "select",
            "count",
            "range",
            "months",
            "group",
        }
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise GeosegError(
                f"data.series has no option '{unknown[0]}'; options: {', '.join(sorted(known))}."
            )
        fmt = str(cfg.get("date_format") or "auto")
        dates = cfg.get("dates")
        if dates is not None:
            dates = tuple(iso_date(d, "data.series.dates") for d in dates)
        select = str(cfg.get("select") or "all")
        if select not in SELECT_RULES:
            raise GeosegError(f"data.series.select={select!r} is not one of {', '.join(SELECT_RULES)}.")
        count = cfg.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise GeosegError(f"data.series.count must be a whole number >= 1 or null, got {count!r}.")
        if select != "all" and count is None:
            raise GeosegError(f"data.series.select={select} picks data.series.count dates per chip; set it.")
        min_valid = cfg.get("min_valid_dates", 1)
        if isinstance(min_valid, bool) or not isinstance(min_valid, int) or min_valid < 1:
            raise GeosegError(f"data.series.min_valid_dates must be a whole number >= 1, got {min_valid!r}.")
        window = cfg.get("range")
        if window is not None:
            if len(window) != 2:
                raise GeosegError(f"data.series.range must be [start, end] dates, got {window!r}.")
            window = (iso_date(window[0], "data.series.range"), iso_date(window[1], "data.series.range"))
            if window[0] > window[1]:
                raise GeosegError(f"data.series.range {list(window)}: the start is after the end.")
        months = cfg.get("months")
        if months is not None:
            months = tuple(int(m) for m in months)
            if not months or not all(1 <= m <= 12 for m in months):
                raise GeosegError(f"data.series.months must list months 1..12, got {list(months)}.")
        group = cfg.get("group")
        if group is not None and group not in GROUPS:
            raise GeosegError(f"data.series.group={group!r} is not one of {', '.join(GROUPS)} (or null).")
        return cls(fmt, dates, mask_options(cfg.get("mask")), min_valid, select, count, window, months, group)

    @property
    def filters_by_date(self) -> bool:
        return self.range is not None or self.months is not None


def mask_options(cfg: Mapping[str, Any] | None) -> MaskOptions:
    """``data.series.mask``, checked."""
    cfg = dict(cfg or {})
    known = {"file", "path", "band", "invalid"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise GeosegError(
            f"data.series.mask has no option '{unknown[0]}'; options: file, path, band, invalid."
        )
    if cfg.get("file") and cfg.get("path"):
        raise GeosegError("data.series.mask: set file (a data.files value) or path (a template), not both.")
    invalid = tuple(float(v) for v in cfg.get("invalid") or ())
    if (cfg.get("file") or cfg.get("path")) and not invalid:
        raise GeosegError(
            "data.series.mask names a mask but no codes: list the codes that mean invalid in "
            "data.series.mask.invalid (Sentinel-2 SCL: [0, 1, 3, 8, 9, 10])."
        )
    band = cfg.get("band", 1)
    if isinstance(band, bool) or not isinstance(band, int) or band < 1:
        raise GeosegError(f"data.series.mask.band must be a 1-based band number, got {band!r}.")
    return MaskOptions(cfg.get("file") and str(cfg["file"]), cfg.get("path"), band, invalid)


def iso_date(value: Any, option: str) -> str:
    """``value`` (a date, or text YAML did not turn into one) as ``YYYY-MM-DD``."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    parsed = parse_date(str(value), "auto")
    if parsed is None:
        raise GeosegError(f"{option}: '{value}' is not a date; write it as YYYY-MM-DD.")
    return parsed


def parse_date(text: str, fmt: str) -> str | None:
    """The ISO date in ``text`` (a ``{date}`` value), or None when it is not one."""
    formats = _AUTO_FORMATS if fmt == "auto" else (fmt,)
    candidates = [text]
    if fmt == "auto" and "T" in text:  # 20240601T101031: the acquisition time is not needed
        candidates.append(text.split("T", 1)[0])
    for candidate in candidates:
        for f in formats:
            try:
                return dt.datetime.strptime(candidate, f).date().isoformat()
            except ValueError:
                continue
    return None


# --- finding the files of each scene and date ---------------------------------------------------

DatePaths = tuple[str, tuple[str, ...], str | None]  # ({date} text, its files in stack order, its mask)


def _regex(pattern: str, first: str | None) -> tuple[re.Pattern, str]:
    """A regex of ``pattern`` (``{file}`` = ``first``) and its glob; each placeholder is a named group
    (``d0``, ``d1``, ... for ``{date}``, all equal; ``f0``, ``f1``, ... for ``{file}``), so the text of
    each can be replaced where it is and nowhere else."""
    parts, globbed, i = [], [], 0
    dates = files = 0
    while i < len(pattern):
        if pattern.startswith(DATE, i):
            parts.append("(?P<d0>[^/]+?)" if dates == 0 else f"(?P<d{dates}>(?P=d0))")
            dates += 1
            globbed.append("*")
            i += len(DATE)
        elif pattern.startswith(FILE, i):
            parts.append(f"(?P<f{files}>{re.escape(first or '')})")
            files += 1
            globbed.append(glob.escape(first or ""))
            i += len(FILE)
        elif pattern.startswith("**", i):
            parts.append(".*")
            globbed.append("**")
            i += 2
        elif pattern[i] in "*?":
            parts.append("[^/]*" if pattern[i] == "*" else "[^/]")
            globbed.append(pattern[i])
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            parts.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            globbed.append(pattern[i : end + 1])
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            globbed.append(pattern[i])
            i += 1
    return re.compile("".join(parts) + r"\Z"), "".join(globbed)


def _replace(path: str, match: re.Match, date: str | None, file: str | None) -> str:
    """``path`` with the ``{date}`` places set to ``date`` and the ``{file}`` places to ``file`` (None =
    keep)."""
    spans = sorted(
        (match.span(name), date if name[0] == "d" else file)
        for name in match.groupdict() if (date if name[0] == "d" else file) is not None
    )  # fmt: skip
    out, at = [], 0
    for (start, end), text in spans:
        out += [path[at:start], text]
        at = end
    return "".join(out) + path[at:]


def find_series(
    root: str, pattern: str, files: Sequence[FileEntry] | None, opts: SeriesOptions, option: str
) -> list[list[DatePaths]]:
    """Every scene of a ``{date}`` pattern under ``root``: its dates in time order, each with its files.

    A scene is a match of the pattern with the date text taken out; ``{file}`` is filled from
    ``files`` (``data.files``) for each date, as for single-date scenes.
    """
    if DATE not in pattern:
        raise GeosegError(f"{option} '{pattern}' has no {DATE} placeholder, but data.series is set.")
    full = join(root, pattern)
    if is_remote(full):
        raise GeosegError(
            f"{option} '{shown(full)}' is a URL with {DATE}, which cannot be listed; download the scenes or "
            "list them under data.root."
        )
    if opts.mask.file and FILE not in pattern:
        raise GeosegError(
            f"data.series.mask.file={opts.mask.file!r} is a {FILE} value, but {option} '{pattern}' has no "
            f"{FILE} placeholder; give the mask as data.series.mask.path (a template with {DATE})."
        )
    if (FILE in pattern) != bool(files):
        raise GeosegError(
            f"{option} '{pattern}': a {FILE} placeholder needs data.files, and data.files needs one."
        )
    first = files[0].name if files else None
    regex, globbed = _regex(full, first)
    scenes: dict[str, dict[str, tuple[tuple[str, ...], str | None]]] = {}
    for path in sorted(glob.glob(globbed, recursive=True)):
        match = regex.match(path)
        if match is None or os.path.isdir(path):
            continue
        text = match.group("d0")
        key = _replace(path, match, "\0", None)  # the place: the path without its date
        paths = (path,) if not files else tuple(_replace(path, match, None, e.name) for e in files)
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise GeosegError(f"date '{text}' of '{path}' has no file '{missing[0]}' for data.files; add it.")
        mask = date_mask_path(root, path, match, text, opts.mask)
        if mask is not None and not os.path.exists(mask):
            raise GeosegError(
                f"date '{text}' of '{path}' has no mask file '{mask}' (data.series.mask); add it."
            )
        scenes.setdefault(key, {})[text] = (paths, mask)
    if not scenes:
        raise GeosegError(f"no image matches '{full}'; check data.root and {option}.")
    keys = sorted({t for dates in scenes.values() for t in dates})
    order = date_order(keys, opts, option)
    return [
        [(t, paths, mask) for t, (paths, mask) in sorted(dates.items(), key=lambda kv: order[kv[0]])]
        for _, dates in sorted(scenes.items())
    ]


def date_mask_path(root: str, path: str, match: re.Match, text: str, mask: MaskOptions) -> str | None:
    """The mask file of one date: its image path with ``{file}`` = ``mask.file``, or ``mask.path`` with
    ``{date}``, ``{stem}``, ``{name}``, ``{parent}`` of the date's first file, under ``root``."""
    if mask.file:
        return _replace(path, match, None, mask.file)
    if not mask.path:
        return None
    try:
        name = mask.path.format(date=text, stem=stem(path), name=file_name(path), parent=parent(path))
    except (KeyError, IndexError, ValueError) as err:
        raise GeosegError(
            f"data.series.mask.path '{mask.path}' uses {err}; use {{date}}, {{stem}}, {{name}} or {{parent}}."
        ) from None
    return join(root, name)


def date_order(texts: Sequence[str], opts: SeriesOptions, option: str) -> dict[str, tuple]:
    """A sort key of every ``{date}`` text: its calendar date, or its number for an order."""
    fmt = opts.date_format
    if fmt != "order":
        parsed = {t: parse_date(t, fmt) for t in texts}
        bad = [t for t, d in parsed.items() if d is None]
        if not bad:
            return {t: (d,) for t, d in parsed.items()}
        if fmt != "auto" or not all(t.isdigit() for t in texts):
            raise GeosegError(
                f"{option}: the {DATE} text '{bad[0]}' is not a date"
                + (f" of data.series.date_format={fmt!r}" if fmt != "auto" else "")
                + "; set data.series.date_format (a strptime format such as %Y%j, or order for files "
                "numbered 0, 1, 2 ...)."
            )
    bad = [t for t in texts if not t.lstrip("-").isdigit()]
    if bad:
        raise GeosegError(f"{option}: data.series.date_format=order needs numbers as {DATE}, got '{bad[0]}'.")
    return {t: (int(t),) for t in texts}


def series_dates(texts: Sequence[str], opts: SeriesOptions, option: str) -> list[str | None]:
    """The ISO date of each ``{date}`` text of one scene (in time order), None for an order without
    ``series.dates``."""
    if opts.dates is not None:
        every = sorted(set(texts), key=lambda t: date_order(texts, opts, option)[t])
        if len(every) > len(opts.dates):
            raise GeosegError(
                f"data.series.dates lists {len(opts.dates)} dates but {option} finds {len(every)} "
                f"({', '.join(every)}); give one date per {DATE} value, in order."
            )
        return [opts.dates[every.index(t)] for t in texts]
    if opts.date_format == "order" or (  # auto: numbers that are no date are an order (a format: dates)
        opts.date_format == "auto" and all(t.isdigit() and parse_date(t, "auto") is None for t in texts)
    ):
        return [None] * len(texts)
    return [parse_date(t, opts.date_format) for t in texts]


def keep_dates(dates: Sequence[str | None], opts: SeriesOptions, option: str) -> list[int]:
    """Indices of the dates ``series.range`` and ``series.months`` keep."""
    if not opts.filters_by_date:
        return list(range(len(dates)))
    if any(d is None for d in dates):
        raise GeosegError(
            f"data.series.range/months need calendar dates, but {option} gives an order (0, 1, 2 ...); "
            "give their dates in data.series.dates."
        )
    keep = [
        i for i, d in enumerate(dates)
        if (opts.range is None or opts.range[0] <= d <= opts.range[1])
        and (opts.months is None or int(d[5:7]) in opts.months)
    ]  # fmt: skip
    return keep


# --- choosing the dates of a chip -----------------------------------------------------------------


def select_dates(valid_fraction: np.ndarray, rule: str, count: int | None, seed: int | None) -> list[int]:
    """Which of a chip's dates (in time order) to use: ``count`` of them by ``rule``, kept in time order.

    ``clearest``: the most valid pixels in the chip (ties to the earlier date); ``even``: spread
    evenly over the series; ``random``: a random subset, seeded per chip (temporal augmentation).
    Fewer dates than ``count``: all of them (the rest is padding).
    """
    n = len(valid_fraction)
    if rule == "all" or count is None or n <= count:
        return list(range(n))
    if rule == "clearest":
        order = np.argsort(-np.asarray(valid_fraction), kind="stable")[:count]
        return sorted(int(i) for i in order)
    if rule == "random":
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(n, size=count, replace=False))
    return sorted({round(float(x)) for x in np.linspace(0, n - 1, count)})


@dataclass(frozen=True)
class SeriesRead:
    """How a series dataset reads chips: ``dates`` per chip (the model's T) picked by ``select``."""

    dates: int
    select: str = "all"
    training: bool = True

    def pick(self, valid_fraction: np.ndarray, seed: int | None) -> list[int]:
        """The dates of one chip (indices in time order), at most :attr:`dates` of them; a longer series
        than the model takes is thinned evenly under ``select=all``; ``random`` is for training only."""
        rule = self.select
        if rule == "random" and not self.training:
            rule = "even"
        if rule == "all" and len(valid_fraction) > self.dates:
            rule = "even"
        return select_dates(valid_fraction, rule, self.dates, seed)


def series_read(cfg: Mapping[str, Any], train_scenes: Sequence[Any], training: bool) -> SeriesRead | None:
    """The chip reading of a series split, from ``data.series`` and the training scenes (whose longest
    series sets the dates per chip when ``count`` is null); None for scenes of one date."""
    if not train_scenes or not train_scenes[0].is_series:
        return None
    opts = SeriesOptions.from_config(cfg.get("series"))
    dates = opts.count or max(len(s.dates) for s in train_scenes)
    return SeriesRead(dates, opts.select, training)
