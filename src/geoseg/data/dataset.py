"""ChipDataset: windowed rasterio reads with a per-worker handle cache, aligned labels and nodata masks."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.masks import image_valid
from geoseg.data.scenes import Scene, read_window
from geoseg.data.windows import Chip


class HandleCache:
    """A bounded LRU of open rasterio datasets, private to one process.

    Handles are opened lazily on first use, closed when evicted, never pickled, and a forked
    DataLoader worker starts with an empty cache instead of sharing its parent's GDAL handles.
    """

    def __init__(self, max_open: int = 64) -> None:
        self.max_open = max(1, max_open)
        self._pid = os.getpid()
        self._open: OrderedDict[Any, tuple[Any, ...]] = OrderedDict()

    def get(self, key: Any, opener: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        """The cached handles for ``key``, opening them with ``opener()`` on a miss."""
        if os.getpid() != self._pid:  # inherited through fork: don't touch the parent's handles
            self._pid, self._open = os.getpid(), OrderedDict()
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key]
        handles = opener()
        self._open[key] = handles
        while len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            for h in reversed(old):
                h.close()
        return handles

    def close(self) -> None:
        if os.getpid() == self._pid:
            for handles in self._open.values():
                for h in reversed(handles):
                    h.close()
        self._open = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_open"])


class ChipDataset(Dataset):
    """Reads :class:`Chip` requests into ``{"image": float32 CxHxW, "mask": int64 HxW, "chip": int64[3]}``.

    Image nodata and unmapped label codes become ``ignore_index`` in the mask; invalid image pixels
    are zero after normalisation (the band mean). ``normalize`` maps (C,H,W) raw bands to float32;
    ``augment(image_hwc, mask, seed)`` is applied after it.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        chip_size: int,
        class_map: ClassMap,
        normalize: Callable[[np.ndarray], np.ndarray],
        augment: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
        max_open_files: int = 64,
    ) -> None:
        self.scenes = list(scenes)
        self.chip_size = chip_size
        self.class_map = class_map
        self.normalize = normalize
        self.augment = augment
        self.handles = HandleCache(max_open_files)

    def _image(self, i: int) -> rasterio.DatasetReader:
        return self.handles.get(("image", i), lambda: (rasterio.open(self.scenes[i].image),))[0]

    def _label(self, i: int) -> Any:
        scene = self.scenes[i]
        codes = self.class_map.codes.astype(int).tolist()
        return self.handles.get(("label", i), lambda: open_label_on_grid(scene, codes))[-1]

    def read(self, chip: Chip) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Raw bands (C,H,W), the image valid mask (H,W) and the raw label (H,W) or None."""
        scene = self.scenes[chip.scene]
        arr = read_window(self._image(chip.scene), scene.bands, chip.row, chip.col, self.chip_size)
        valid = image_valid(arr, scene.nodata)
        label = None
        if scene.label is not None:
            label = read_window(self._label(chip.scene), (1,), chip.row, chip.col, self.chip_size)[0]
        return arr, valid, label

    def __getitem__(self, chip: Chip) -> dict[str, torch.Tensor]:
        chip = Chip(*chip)
        arr, valid, label = self.read(chip)
        if label is None:
            mask = np.full(valid.shape, self.class_map.ignore_index, dtype=np.int64)
        else:
            mask = self.class_map(label)
            mask[~valid] = self.class_map.ignore_index
        image = self.normalize(arr)
        image[:, ~valid] = 0.0
        if self.augment is not None:
            hwc, mask = self.augment(np.moveaxis(image, 0, -1), mask, chip.seed)
            image = np.moveaxis(hwc, -1, 0)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
            "chip": torch.tensor([chip.scene, chip.row, chip.col], dtype=torch.int64),
        }

    def close(self) -> None:
        """Close every file handle this process holds."""
        self.handles.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown GDAL may be gone
            self.handles.close()
