"""Label handling: class codes to contiguous indices, and reading labels on the image grid."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geoseg.data.label_checks import label_fill_value
from geoseg.data.remote import configure_remote_reads, is_remote
from geoseg.data.scenes import Scene, scene_grid
from geoseg.data.vector_labels import VectorLabels
from geoseg.errors import GeosegError


def mask_dtype(num_classes: int, ignore_index: int) -> np.dtype:
    """The smallest integer dtype for class indices and ``ignore_index`` (uint8 in the usual case)."""
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= ignore_index <= info.max and num_classes - 1 <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


class ClassMap:
    """Maps label codes (any dtype, gaps allowed) to indices ``0..K-1``; anything else to ``ignore_index``.

    8- and 16-bit integer labels go through a lookup table over the whole dtype (one gather per
    pixel); other dtypes fall back to a binary search over the sorted codes.
    """

    def __init__(self, codes: Sequence[int], ignore_index: int = 255) -> None:
        codes = np.asarray(codes, dtype=np.float64)
        if len(np.unique(codes)) != len(codes):
            raise ValueError(f"duplicate class codes in {codes.tolist()}")
        self.order = np.argsort(codes)
        self.sorted_codes = codes[self.order]
        self.codes = codes
        self.ignore_index = ignore_index
        self.dtype = mask_dtype(len(codes), ignore_index)
        self._luts: dict[np.dtype, np.ndarray] = {}

    def reads_directly(self, scene: Scene) -> bool:
        """Whether ``scene``'s label already holds class indices, so it can be read without a lookup.

        True when its codes are 0..K-1 in list order, its dtype is :attr:`dtype`, every value seen
        at start-up is a class index or ``ignore_index``, and what fills pixels outside the label's
        extent is ``ignore_index`` too.
        """
        if scene.label_values is None or scene.label_dtype != self.dtype.name:
            return False
        if not np.array_equal(self.codes, np.arange(len(self.codes))):
            return False
        allowed = set(range(len(self.codes))) | {self.ignore_index}
        if not set(scene.label_values) <= allowed:
            return False
        codes = self.codes.astype(int).tolist()
        return (
            scene.label_on_grid
            or label_fill_value(scene.label_dtype, scene.label_nodata, codes) == self.ignore_index
        )

    def _lut(self, dtype: np.dtype) -> np.ndarray:
        """Lookup table of a small integer dtype, indexed by each value's bits read as unsigned.

        Signed labels are then looked up through an unsigned *view* (no copy, no offset pass).
        """
        if dtype not in self._luts:
            info = np.iinfo(dtype)
            lut = np.full(2 ** (8 * dtype.itemsize), self.ignore_index, dtype=self.dtype)
            for index, code in enumerate(self.codes):
                if code == int(code) and info.min <= code <= info.max:
                    lut[np.array(int(code), dtype=dtype).view(_unsigned(dtype))] = index
            self._luts[dtype] = lut
        return self._luts[dtype]

    def __call__(self, label: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Class indices (in :attr:`dtype`) of the same shape as ``label``, into ``out`` when given."""
        if label.dtype.kind in "ui" and label.dtype.itemsize <= 2:
            return np.take(self._lut(label.dtype), label.view(_unsigned(label.dtype)), out=out)
        mapped = self._search(label)
        if out is None:
            return mapped
        out[...] = mapped
        return out

    def _search(self, label: np.ndarray) -> np.ndarray:
        if len(self.sorted_codes) == 0:
            return np.full(label.shape, self.ignore_index, dtype=self.dtype)
        values = label.astype(np.float64, copy=False)
        pos = np.searchsorted(self.sorted_codes, values).clip(0, len(self.sorted_codes) - 1)
        hit = self.sorted_codes[pos] == values
        return np.where(hit, self.order[pos], self.ignore_index).astype(self.dtype)


def _unsigned(dtype: np.dtype) -> np.dtype:
    """The unsigned integer dtype of the same size (uint8 for int8, uint16 for int16)."""
    return np.dtype(f"u{np.dtype(dtype).itemsize}")


def open_label_on_grid(scene: Scene, codes: Sequence[int]) -> tuple[rasterio.DatasetReader, object]:
    """Open the label and a reader that yields it on the image grid.

    Returns ``(src, reader)``: the same object when the label shares the image grid (no
    reprojection per chip); otherwise a nearest-neighbour :class:`WarpedVRT` onto the image grid,
    whose pixels outside the label's extent hold a fill value that is no class (so become ignore).
    """
    assert scene.label is not None
    if scene.vector is not None:  # polygons, rasterised per window straight onto the image grid
        features = VectorLabels(scene.label, scene.vector, scene_grid(scene), warn=False)
        return features, features
    if is_remote(scene.label):
        configure_remote_reads()
    src = rasterio.open(scene.label)
    if scene.label_on_grid:
        return src, src
    if scene.grid is not None:
        crs, transform = scene.grid.rio_crs, scene.grid.affine
    else:
        with rasterio.open(scene.image) as img:
            crs, transform = img.crs, img.transform
    fill = label_fill_value(src.dtypes[0], scene.label_nodata, codes)
    vrt = WarpedVRT(
        src,
        crs=crs,
        transform=transform,
        width=scene.width,
        height=scene.height,
        resampling=Resampling.nearest,
        src_nodata=scene.label_nodata,
        nodata=fill,
    )
    return src, vrt


def check_classes(classes: Any, option: str) -> list[Mapping[str, Any]]:
    """A class list (``data.classes``, evaluate's ``classes=``): {code, name, color} entries with
    distinct integer codes and distinct names; one line naming ``option`` otherwise."""
    if isinstance(classes, (str, Mapping)) or not isinstance(classes or [], Iterable):
        raise GeosegError(f"{option} must be a list of {{code, name, color}} entries, got {classes!r}.")
    classes = list(classes or [])
    if not classes:
        raise GeosegError(f"{option} is empty; list the classes as {{code, name, color}} entries.")
    for entry in classes:
        code = entry.get("code") if isinstance(entry, Mapping) else None
        if not isinstance(code, int) or isinstance(code, bool):
            raise GeosegError(
                f"{option}: each entry needs an integer code, like {{code: 1, name: water}}; got {entry!r}."
            )
    codes = [int(c["code"]) for c in classes]
    if len(set(codes)) != len(codes):
        raise GeosegError(f"{option} has duplicate codes: {codes}.")
    names = [str(c.get("name", c["code"])) for c in classes]
    if len(set(names)) != len(names):  # metrics are keyed by name: one would hide the other
        twice = sorted({n for n in names if names.count(n) > 1})
        raise GeosegError(f"{option} has duplicate names {twice}; give every class its own name.")
    return classes


def read_label_decimated(scene: Scene, codes: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """The scene's label codes on its image grid at ``shape`` (nearest; from overviews where there are)."""
    src, reader = open_label_on_grid(scene, codes)
    try:
        return reader.read(1, out_shape=shape, resampling=Resampling.nearest)
    finally:
        if reader is not src:
            reader.close()
        src.close()
