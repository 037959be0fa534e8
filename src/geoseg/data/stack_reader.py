"""The one raster read path: a window of a scene's selected bands, from all its files, on its reference grid.

Files on the reference grid are read straight into the output; any other file is resampled for the
window alone (``rasterio.warp.reproject`` of just that window, never a whole-file warp), band by
band with that band's nodata. The validity rule is the same for chips, statistics, predict and the
quicklook (``data.invalid``):

- ``any`` (default): a pixel is invalid where **any** selected band holds its own nodata value, or
  lies outside a file's footprint;
- ``all``: invalid only where **every** selected band does (GDAL's dataset-mask convention);
- either way NaN/inf in any band makes a pixel invalid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geoseg.data.remote import configure_remote_reads, is_remote, with_retries
from geoseg.data.stack import SceneFile
from geoseg.errors import GeosegError, first_line


@dataclass(frozen=True)
class Part:
    """The bands one file gives to the selection: positions in the output and 1-based file bands."""

    file: int
    positions: tuple[int, ...]
    bands: tuple[int, ...]
    nodata: tuple[float | None, ...]

    @property
    def contiguous(self) -> bool:
        return self.positions == tuple(range(self.positions[0], self.positions[0] + len(self.positions)))


def plan_parts(files: tuple[SceneFile, ...], selected: tuple[int, ...]) -> list[Part]:
    """Group the selected stacked bands (1-based) by the file that holds them."""
    owner = [(i, j) for i, f in enumerate(files) for j in range(len(f.bands))]
    bad = [k for k in selected if not 1 <= k <= len(owner)]
    if bad:
        raise GeosegError(f"band {bad[0]} selected but the stack has {len(owner)} bands (1..{len(owner)}).")
    groups: dict[int, list[tuple[int, int]]] = {}
    for pos, k in enumerate(selected):
        i, j = owner[k - 1]
        groups.setdefault(i, []).append((pos, j))
    return [
        Part(i, tuple(p for p, _ in pj), tuple(files[i].bands[j] for _, j in pj),
             tuple(files[i].nodata[j] for _, j in pj))
        for i, pj in sorted(groups.items())
    ]  # fmt: skip


def _is_number(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _as_dtype(value: float | None, dtype: np.dtype) -> np.generic | None:
    """``value`` as a scalar of ``dtype`` to compare with, or None when no element can equal it."""
    if not _is_number(value):
        return None
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not float(value).is_integer() or not info.min <= value <= info.max:
            return None
        return dtype.type(int(value))
    return dtype.type(value)


def invalid_pixels(
    arr: np.ndarray, nodata: Sequence[float | None] | float | None, rule: str = "any",
    missing: np.ndarray | None = None,
) -> np.ndarray | None:  # fmt: skip
    """(H, W) bool of the invalid pixels of a (C, H, W) chip, or None when every pixel is valid.

    ``nodata`` is one value per band (or one for all); ``missing`` marks (C, H, W) pixels a band does
    not cover. With ``rule="any"`` a pixel is invalid where any band is at its nodata or missing, with
    ``"all"`` only where every band is; NaN/inf in any band makes it invalid under both rules.
    """
    values = list(nodata) if isinstance(nodata, Sequence) else [nodata] * arr.shape[0]
    hits: np.ndarray | None = None  # OR of the bands at nodata (rule any) or their count (rule all)
    for b, value in enumerate(values):
        target = _as_dtype(value, arr.dtype)
        hit = None if target is None else arr[b] == target
        if missing is not None:
            hit = missing[b] if hit is None else hit | missing[b]
        if hit is None:
            continue
        if rule == "any":
            hits = hit if hits is None else np.logical_or(hits, hit, out=hits)
        else:
            hits = hit.astype(np.int16) if hits is None else hits + hit
    invalid = None if hits is None else hits if rule == "any" else hits == arr.shape[0]
    if arr.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            nonfinite = ~np.isfinite(arr.sum(axis=0, dtype=np.float64))  # one pass; NaN or inf in any band
        if nonfinite.any():  # finite float64 values near the limit can overflow the sum: check each band
            rows, cols = np.nonzero(nonfinite)
            nonfinite[rows, cols] = ~np.isfinite(arr[:, rows, cols]).all(axis=0)
            invalid = nonfinite if invalid is None else invalid | nonfinite
    return invalid if invalid is not None and invalid.any() else None


def _integer_lattice(src: rasterio.DatasetReader, grid) -> tuple[int, int, int, int] | None:
    """(fy, fx, oy, ox) when ``src`` is a coarser grid whose pixels are whole blocks of ``grid``'s
    (same CRS, north-up, pixel size an integer multiple, corners on the grid's lattice): reference pixel
    (r, c) then lies in file pixel ((r + oy) // fy, (c + ox) // fx), so nearest resampling is indexing.
    None otherwise."""
    ref, own = grid.affine, src.transform
    if ref.b or ref.d or own.b or own.d or src.crs != grid.rio_crs:
        return None
    values = [own.a / ref.a, own.e / ref.e, (ref.c - own.c) / ref.a, (ref.f - own.f) / ref.e]
    if not all(abs(v - round(v)) < 1e-6 for v in values) or round(values[0]) < 1 or round(values[1]) < 1:
        return None
    fx, fy, ox, oy = (round(v) for v in values)
    return fy, fx, oy, ox


def _read_nearest_upsampled(
    src: rasterio.DatasetReader, part: Part, window: Window, dest: np.ndarray,
    lattice: tuple[int, int, int, int],
) -> np.ndarray | None:  # fmt: skip
    """Nearest resampling onto a finer grid whose pixels nest in ``src``'s (see :func:`_integer_lattice`):
    read the covering coarse window once and index it; the same pixels as a nearest ``reproject``, without
    a warp per band. Returns the (bands, h, w) pixels outside ``src``'s footprint, or None."""
    fy, fx, oy, ox = lattice
    h, w = dest.shape[1:]
    rows = (np.arange(int(window.row_off), int(window.row_off) + h) + oy) // fy
    cols = (np.arange(int(window.col_off), int(window.col_off) + w) + ox) // fx
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    inside_r, inside_c = (rows >= 0) & (rows < src.height), (cols >= 0) & (cols < src.width)
    a0, a1 = max(r0, 0), min(r1, src.height)
    b0, b1 = max(c0, 0), min(c1, src.width)
    if a0 >= a1 or b0 >= b1:
        dest[...] = 0
        return np.ones(dest.shape, dtype=bool)
    block = src.read(list(part.bands), window=Window(b0, a0, b1 - b0, a1 - a0))
    ri = np.clip(rows - a0, 0, a1 - a0 - 1)
    ci = np.clip(cols - b0, 0, b1 - b0 - 1)
    np.copyto(dest, block[:, ri][:, :, ci], casting="unsafe")
    if inside_r.all() and inside_c.all():
        return None
    outside = ~(inside_r[:, None] & inside_c[None, :])
    dest[:, outside] = 0
    return np.broadcast_to(outside, dest.shape).copy()


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """Float type a resampled band is computed in before it is cast to the stack dtype."""
    return np.dtype(np.float64 if dtype.itemsize > 4 or dtype.name in ("int32", "uint32") else np.float32)


class StackReader:
    """Reads windows of a scene's selected bands, from each of its files, onto its reference grid.

    Handles open lazily on first read and stay open until :meth:`close`; build one reader per process.
    """

    def __init__(self, files: tuple[SceneFile, ...], selected: tuple[int, ...], grid, rule: str = "any",
                 scene: str = "") -> None:  # fmt: skip
        self.files, self.grid, self.rule, self.scene = files, grid, rule, scene
        self.parts = plan_parts(files, selected)
        self.count = len(selected)
        self._open: dict[int, rasterio.DatasetReader] = {}

    def _src(self, i: int) -> rasterio.DatasetReader:
        if i not in self._open:
            path = self.files[i].path
            if is_remote(path):  # opened inside with_retries, which names the URL and the cause
                configure_remote_reads()
                self._open[i] = rasterio.open(path)
                return self._open[i]
            try:
                self._open[i] = rasterio.open(path)
            except RasterioError as err:
                raise GeosegError(f"cannot open '{path}' ({first_line(err)}).") from None
        return self._open[i]

    def _reopen(self, i: int) -> None:
        """Close file ``i``: the next read opens it afresh (after a failed remote read)."""
        src = self._open.pop(i, None)
        if src is not None:
            src.close()

    def read(self, window: Window, out: np.ndarray) -> np.ndarray | None:
        """Fill (C, h, w) ``out`` with ``window`` of the reference grid; return its invalid mask or None."""
        return self._read(out, window, self.parts)

    def read_decimated(self, shape: tuple[int, int], first_band_only: bool = False,
                       dtype: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """The whole scene at ``shape`` by nearest resampling (from overviews where there are any).

        With ``first_band_only`` each integer file contributes its first selected band (all of them
        when its bands declare different nodata values; float files all of them, for NaN anywhere):
        a cheap validity estimate for chip sampling.
        """
        parts, k = [], 0
        for p in self.parts:
            whole = not first_band_only or len({repr(v) for v in p.nodata}) > 1
            n = len(p.bands) if whole or self.files[p.file].dtype[0] == "f" else 1
            parts.append(Part(p.file, tuple(range(k, k + n)), p.bands[:n], p.nodata[:n]))
            k += n
        count = sum(len(p.bands) for p in parts)
        out = np.empty((count, *shape), dtype=dtype or self.dtype)
        return out, self._read(out, None, parts)

    @property
    def dtype(self) -> str:
        return np.result_type(*[np.dtype(self.files[p.file].dtype) for p in self.parts]).name

    def _read(self, out: np.ndarray, window: Window | None, parts: list[Part]) -> np.ndarray | None:
        h, w = out.shape[1:]
        transform = None
        if not all(self.files[p.file].on_grid for p in parts):  # only resampled files need the grid
            if window is None:
                transform = self.grid.affine * Affine.scale(self.grid.width / w, self.grid.height / h)
            else:
                transform = window_transform(window, self.grid.affine)
        missing: np.ndarray | None = None  # (C, h, w): pixels outside a resampled file's footprint
        for part in parts:
            dest = out[part.positions[0] : part.positions[0] + len(part.positions)] if part.contiguous else (
                np.empty((len(part.bands), h, w), dtype=out.dtype))  # fmt: skip
            path = self.files[part.file].path
            try:
                if is_remote(path):
                    where = f"window {window}" if window is not None else "a decimated read"
                    outside = with_retries(
                        lambda part=part, dest=dest: self._read_part(part, window, transform, dest),
                        lambda part=part: self._reopen(part.file), path, where,
                    )  # fmt: skip
                else:
                    outside = self._read_part(part, window, transform, dest)
            except RasterioError as err:
                where = f"window {window}" if window is not None else "a decimated read"
                raise GeosegError(
                    f"cannot read '{self.files[part.file].path}' ({where}): {first_line(err)}; "
                    "the file may be truncated or corrupt."
                ) from None
            if not part.contiguous:
                out[list(part.positions)] = dest
            if outside is not None:
                missing = np.zeros(out.shape, dtype=bool) if missing is None else missing
                missing[list(part.positions)] = outside
        nodata = [None] * out.shape[0]
        for part in parts:
            for pos, value in zip(part.positions, part.nodata, strict=True):
                nodata[pos] = value
        return invalid_pixels(out, nodata, self.rule, missing)

    def _read_part(
        self, part: Part, window: Window | None, transform: Affine, dest: np.ndarray
    ) -> np.ndarray | None:
        """Read one file's bands into ``dest``; return (bands, h, w) pixels outside its footprint, or None."""
        src, f = self._src(part.file), self.files[part.file]
        if f.on_grid:
            src.read(list(part.bands), window=window, out=dest, resampling=Resampling.nearest)
            if not f.masked:
                return None
            masks = src.read_masks(list(part.bands), window=window, out_shape=dest.shape,
                                   resampling=Resampling.nearest)  # fmt: skip
            outside = masks == 0
            return outside if outside.any() else None
        method = Resampling.nearest if window is None else Resampling[f.resampling]
        if window is not None and method == Resampling.nearest:
            lattice = _integer_lattice(src, self.grid)
            if lattice is not None:
                return _read_nearest_upsampled(src, part, window, dest, lattice)
        work = np.empty(dest.shape, dtype=_work_dtype(dest.dtype))
        for b, (band, nodata) in enumerate(zip(part.bands, part.nodata, strict=True)):
            work[b] = np.nan
            reproject(
                source=rasterio.band(src, band), destination=work[b], src_transform=src.transform,
                src_crs=src.crs, src_nodata=nodata, dst_transform=transform, dst_crs=self.grid.rio_crs,
                dst_nodata=np.nan, resampling=method,
            )  # fmt: skip
        missing = np.isnan(work)
        if dest.dtype.kind in "iu":
            info = np.iinfo(dest.dtype)
            np.rint(work, out=work)
            np.clip(work, info.min, info.max, out=work)
            work[missing] = 0
        np.copyto(dest, work, casting="unsafe")
        return missing if missing.any() else None

    def close(self) -> None:
        for src in self._open.values():
            src.close()
        self._open = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state
