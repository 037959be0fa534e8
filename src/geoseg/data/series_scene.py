"""A scene of many dates, inspected at start-up, and the reads of its chips: (T, C + 1, h, w) per chip.

Each date is a stack of files as a single-date scene is (``data.files``, other grids, per-band nodata),
read onto the first date's reference grid. A date's pixel is invalid where its bands are (nodata,
GDAL mask, NaN, outside its footprint) or where its mask file (``data.series.mask``: a cloud mask,
Sentinel-2's SCL) holds an ``invalid`` code.

A series chip is one 4-D tensor row: for each of T dates its C bands and then its validity (1 valid,
0 invalid or a padded date), date after date in time order, so ``(T * (C + 1), h, w)``. Invalid
pixels of a date hold the band mean (they normalise to 0). The label pixel is used where at least
``min_valid_dates`` dates are valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geoseg.data.band_files import FileEntry
from geoseg.data.stack import Grid, SceneFile, check_overlap, inspect_stack, stack_dtype
from geoseg.data.stack_reader import StackReader
from geoseg.errors import GeosegError


@dataclass(frozen=True)
class DateMask:
    """A date's mask band, on its own grid (read with nearest resampling), and its invalid codes."""

    file: SceneFile
    invalid: tuple[float, ...]


@dataclass(frozen=True)
class SeriesDate:
    """One date of a series scene: its ``{date}`` text, ISO date (None for an order), files and mask."""

    text: str
    date: str | None
    files: tuple[SceneFile, ...]
    mask: DateMask | None = None

    @property
    def label(self) -> str:
        """How logs and the run record name it: its date, else its order text."""
        return self.date or f"#{self.text}"


def on_reference(files: Sequence[SceneFile], ref: Grid, first: str) -> tuple[SceneFile, ...]:
    """``files`` (inspected on their own grids) with ``on_grid`` judged against the series grid ``ref``."""
    out = []
    for f in files:
        grid = f.grid or ref
        same = grid.same_as(ref)
        if not same:
            check_overlap(grid, ref, f.path, first, "first")
        out.append(dataclasses.replace(f, on_grid=same, masked=f.masked and same))
    return tuple(out)


def inspect_mask(path: str, band: int, invalid: Sequence[float], ref: Grid, first: str) -> DateMask:
    """Open a date's mask file once: readable, georeferenced, the band there; on the series grid."""
    stack = inspect_stack([path], [FileEntry("mask", (band,), None, "nearest")], None, "first", True,
                          "mask", "data.series.mask")  # fmt: skip
    (file,) = on_reference(stack.files, ref, first)
    return DateMask(file, tuple(float(v) for v in invalid))


def inspect_dates(
    dates: Sequence[tuple[str, str | None, tuple[str, ...], str | None]],
    entries: Sequence[FileEntry] | None,
    nodata: float | Sequence[float | None] | None,
    grid_rule: str,
    ref: Grid,
    bands_names: Sequence[str | None],
    mask_band: int,
    invalid: Sequence[float],
) -> tuple[tuple[SeriesDate, ...], str]:
    """Every date of a series (``(text, iso, files, mask file)``) checked against the first date's grid
    ``ref`` and band names; the dates and the dtype that holds all of them."""
    out, dtypes = [], []
    for text, iso, paths, mask_path in dates:
        stack = inspect_stack(paths, entries, nodata, grid_rule, True, "image", "data.splits / data.series")
        if len(stack.names) != len(bands_names):
            raise GeosegError(
                f"date '{text}' of '{paths[0]}' stacks {len(stack.names)} bands but the first date of its "
                f"scene {len(bands_names)}; every date of a series needs the same bands."
            )
        files = on_reference(stack.files, ref, paths[0])
        dtypes += [f.dtype for f in files]
        mask = None
        if invalid:
            source = mask_path or paths[0]
            mask = inspect_mask(source, mask_band, invalid, ref, paths[0])
        out.append(SeriesDate(text, iso, files, mask))
    return tuple(out), stack_dtype(dtypes)


class DateReader:
    """Reads one date of a series: its bands (a :class:`StackReader`) and its mask, onto the series grid."""

    def __init__(self, date: SeriesDate, bands: tuple[int, ...], grid: Grid, rule: str, scene: str) -> None:
        self.stack = StackReader(date.files, bands, grid, rule, f"{scene} {date.label}")
        self.mask = date.mask
        self.mask_reader = None
        self._table: np.ndarray | None = None  # invalid codes of an 8/16-bit mask, as a lookup table
        if date.mask is not None:
            self.mask_reader = StackReader((date.mask.file,), (1,), grid, "any", f"{scene} {date.label} mask")

    def _masked(
        self, codes: np.ndarray, outside: np.ndarray | None, invalid: np.ndarray | None
    ) -> np.ndarray | None:
        if codes.dtype.kind in "u" and codes.dtype.itemsize <= 2:  # a lookup table: one pass
            if self._table is None:
                top = np.iinfo(codes.dtype).max
                self._table = np.zeros(top + 1, dtype=bool)
                self._table[
                    [int(c) for c in self.mask.invalid if 0 <= c <= top and float(c).is_integer()]
                ] = True
            hit = self._table[codes[0]]
        else:
            hit = np.isin(codes[0], np.asarray(self.mask.invalid, dtype=codes.dtype))
        for extra in (outside, invalid):
            if extra is not None:
                hit = extra if hit is None else hit | extra
        return hit if hit is not None and hit.any() else None

    def read(self, window: Window, out: np.ndarray) -> np.ndarray | None:
        """Fill (C, h, w) ``out``; its invalid mask (bands or mask) or None."""
        invalid = self.stack.read(window, out)
        if self.mask_reader is None:
            return invalid
        codes = np.empty((1, *out.shape[1:]), dtype=self.mask.file.dtype)
        outside = self.mask_reader.read(window, codes)
        return self._masked(codes, outside, invalid)

    def read_decimated(
        self, shape: tuple[int, int], first_band_only: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The date at ``shape`` (nearest decimation) and its invalid mask, as :class:`StackReader`'s."""
        arr, invalid = self.stack.read_decimated(shape, first_band_only)
        if self.mask_reader is None:
            return arr, invalid
        codes, outside = self.mask_reader.read_decimated(shape)
        return arr, self._masked(codes, outside, invalid)

    @property
    def dtype(self) -> str:
        return self.stack.dtype

    def close(self) -> None:
        self.stack.close()
        if self.mask_reader is not None:
            self.mask_reader.close()


def read_series_chip(
    readers: Sequence[DateReader],
    window: Window,
    out: np.ndarray,
    fill: np.ndarray,
    pick: Callable[[np.ndarray], Sequence[int]],
    min_valid: int,
) -> np.ndarray | None:
    """Fill ``out`` (T, C + 1, h, w) with a chip of the dates ``pick(valid_fractions)`` chooses (padded
    with invalid dates); return the pixels where fewer than ``min_valid`` chosen dates are valid.

    ``fill`` is the (C, 1, 1) band mean put in the invalid pixels of each date.
    """
    t_out, channels, h, w = out.shape
    n = len(readers)
    direct = n <= t_out and list(pick(np.ones(n))) == list(range(n))  # every date, in order: no choice
    bands = out[:n, :-1] if direct else np.empty((n, channels - 1, h, w), dtype=out.dtype)
    invalids = [reader.read(window, bands[k]) for k, reader in enumerate(readers)]
    if direct and all(i is None for i in invalids):  # every date valid everywhere: nothing to mask
        out[:n, -1] = 1
        out[n:, :-1] = fill
        out[n:, -1] = 0
        return None if n >= min_valid else np.ones((h, w), dtype=bool)
    valid = np.ones((n, h, w), dtype=bool)
    for k, invalid in enumerate(invalids):
        if invalid is not None:
            valid[k] = ~invalid
    chosen = list(range(n)) if direct else list(pick(valid.reshape(n, -1).mean(axis=1)))[:t_out]
    for slot in range(t_out):
        if slot < len(chosen):
            k = chosen[slot]
            if not direct:
                out[slot, :-1] = bands[k]
            if not valid[k].all():
                np.copyto(out[slot, :-1], fill, where=~valid[k])
            out[slot, -1] = valid[k]
        else:  # a padded date: band means, invalid everywhere
            out[slot, :-1] = fill
            out[slot, -1] = 0
    count = valid[chosen].sum(axis=0) if chosen else np.zeros((h, w), dtype=int)
    few = count < min_valid
    return few if few.any() else None


class SeriesTileReader:
    """Tiles of a series scene for whole-scene predict: ``read(window, out)`` fills (T * (C + 1), h, w)
    with the dates ``read.pick`` chooses per tile (the layout of training chips)."""

    def __init__(
        self, readers: Sequence[DateReader], dates: int, pick: Callable[[np.ndarray], Sequence[int]],
        band_fill: np.ndarray, min_valid: int,
    ) -> None:  # fmt: skip
        self.readers, self.dates, self.pick = list(readers), dates, pick
        self.band_fill, self.min_valid = np.asarray(band_fill)[:, None, None], min_valid

    def read(self, window: Window, out: np.ndarray) -> np.ndarray | None:
        view = out.reshape(self.dates, -1, *out.shape[1:])
        return read_series_chip(self.readers, window, view, self.band_fill, self.pick, self.min_valid)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
