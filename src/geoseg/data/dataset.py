"""ChipDataset: windowed rasterio reads with a per-worker handle cache, aligned labels and nodata masks."""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset, get_worker_info

from geoseg.data.labels import ClassMap, open_label_on_grid
from geoseg.data.normalize import BATCH_DTYPES, batch_dtype, raw_fill_values
from geoseg.data.remote import is_remote, with_retries
from geoseg.data.scenes import Scene
from geoseg.data.series import SeriesRead
from geoseg.data.series_scene import read_series_chip
from geoseg.data.stack_reader import StackReader
from geoseg.data.transforms import Augment, apply_symmetry
from geoseg.data.windows import Chip
from geoseg.errors import GeosegError


class HandleCache:
    """A bounded LRU of open rasterio datasets, private to one process and one thread.

    Handles are opened lazily on first use, closed when evicted, never pickled, and a forked
    DataLoader worker starts with an empty cache instead of sharing its parent's GDAL handles.
    Each thread has its own LRU (a GDAL handle is not safe to share between threads), each bounded
    by ``max_open``, so a thread never closes a handle another one is reading.
    """

    def __init__(self, max_open: int = 64) -> None:
        self.max_open = max(1, max_open)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._threads: dict[int, OrderedDict[Any, tuple[Any, ...]]] = {}

    @property
    def _open(self) -> OrderedDict[Any, tuple[Any, ...]]:
        """This thread's LRU."""
        with self._lock:
            if os.getpid() != self._pid:  # inherited through fork: don't touch the parent's handles
                self._pid, self._threads = os.getpid(), {}
            return self._threads.setdefault(threading.get_ident(), OrderedDict())

    def get(self, key: Any, opener: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        """The cached handles for ``key``, opening them with ``opener()`` on a miss."""
        cache = self._open
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        handles = opener()
        cache[key] = handles
        while len(cache) > self.max_open:
            _, old = cache.popitem(last=False)
            for h in reversed(old):
                h.close()
        return handles

    def drop(self, key: Any) -> None:
        """Close this thread's handles of ``key`` (a file to open afresh after a failed read)."""
        for h in reversed(self._open.pop(key, ())):
            h.close()

    def close(self) -> None:
        with self._lock:
            if os.getpid() == self._pid:
                for cache in self._threads.values():
                    for handles in cache.values():
                        for h in reversed(handles):
                            h.close()
            self._threads = {}

    def __len__(self) -> int:
        return sum(len(c) for c in self._threads.values())

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_open"])


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor, allocated in shared memory inside a DataLoader worker.

    Workers hand batches to the main process through shared memory; allocating there directly
    saves the copy PyTorch would otherwise make (as ``default_collate`` does).
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    try:  # the private allocator default_collate uses; fall back to a copy into shared memory
        storage = torch.empty(0, dtype=dtype).untyped_storage()._new_shared(math.prod(shape) * dtype.itemsize)
    except AttributeError:
        return torch.empty(shape, dtype=dtype).share_memory_()
    return torch.empty(0, dtype=dtype).set_(storage).view(shape)


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataLoader ``collate_fn`` for :class:`ChipDataset`: its ``__getitems__`` already built the batch."""
    return batch


class ChipDataset(Dataset):
    """Reads :class:`Chip` requests into raw chips: ``{"image": CxHxW, "mask": HxW, "chip": int64[3]}``.

    - ``image`` keeps the scenes' raw dtype (see :func:`batch_dtype`: uint16 stays uint16); pixels
      that are nodata or non-finite hold the band mean (``fill``), so they normalise to about 0.
      Normalise with :class:`~geoseg.models.band_normalize.BandNormalize` where the model runs.
    - ``mask`` holds class indices in the smallest integer dtype (uint8 normally) with
      ``ignore_index`` where the image is invalid or the label unmapped; call ``.long()`` for a loss.

    ``__getitems__`` (which DataLoader calls with a whole batch of chips) reads every chip straight
    into one preallocated batch (in shared memory inside a worker), so there is no per-chip copy and
    no collate copy. Use :func:`collate_batch` as the DataLoader's ``collate_fn``.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        chip_size: int,
        class_map: ClassMap,
        fill: Sequence[float],
        augment: Augment | None = None,
        max_open_files: int = 64,
        reads_in_flight: int = 1,
        series: SeriesRead | None = None,
    ) -> None:
        self.scenes = list(scenes)
        self.chip_size = chip_size
        self.class_map = class_map
        self.dtype = batch_dtype([s.dtype for s in self.scenes])
        self.fill = raw_fill_values(fill, self.dtype)[:, None, None]
        self.augment = augment
        # a cached scene reader holds one handle per file of its stack: data.max_open_files bounds files
        files_per_scene = max(len(s.stack) for s in self.scenes)
        self.handles = HandleCache(max(8, max_open_files // files_per_scene))
        bands = {len(s.bands) for s in self.scenes}
        if len(bands) != 1 or len(self.fill) not in bands:
            raise GeosegError(
                f"the scenes select {sorted(bands)} bands and the statistics have {len(self.fill)}; "
                "every scene must give the same bands (data.bands) as the stats file."
            )
        self.num_bands = bands.pop()
        # a series chip: (dates x (bands + validity), H, W); padded dates and pixels with too few valid
        # dates hold the band mean and validity 0
        self.series = series
        self.band_fill = self.fill
        self.channels = self.num_bands
        if series is not None:
            if not all(s.is_series for s in self.scenes):
                raise GeosegError("every scene of a split must be a series ({date} in data.splits.*.images), "
                                  "or none")  # fmt: skip
            per_date = np.concatenate([self.fill, np.zeros((1, 1, 1), self.fill.dtype)])
            self.fill = np.tile(per_date, (series.dates, 1, 1))
            self.channels = series.dates * (self.num_bands + 1)
        self.label_is_index = [s.label is not None and class_map.reads_directly(s) for s in self.scenes]
        # chips of a batch read by this many threads at once, so network latency overlaps (remote scenes)
        self.reads_in_flight = max(1, int(reads_in_flight))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def _image(self, i: int) -> StackReader:
        return self.handles.get(("image", i), lambda: (self.scenes[i].reader(),))[0]

    def _label(self, i: int) -> Any:
        def opener() -> tuple[Any, ...]:  # runs only on a cache miss, not per chip
            return open_label_on_grid(self.scenes[i], self.class_map.codes.astype(int).tolist())

        return self.handles.get(("label", i), opener)[-1]

    def _read_into(self, chip: Chip, image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        """Fill (C,H,W) ``image`` and (H,W) ``mask`` for one chip; return its invalid mask (or None)."""
        invalid = self._read_image(chip, image)
        self._read_mask(chip, mask)
        if invalid is not None:
            self._invalidate(image, mask, invalid, read=True)
        return invalid

    def _window(self, chip: Chip) -> Window:
        return Window(chip.col, chip.row, self.chip_size, self.chip_size)

    def _read_image(self, chip: Chip, image: np.ndarray) -> np.ndarray | None:
        """The chip's raw pixels into ``image``; its invalid mask (or None)."""
        if self.series is not None:
            return self._read_series(chip, image)
        return self._image(chip.scene).read(self._window(chip), image)

    def _read_series(self, chip: Chip, image: np.ndarray) -> np.ndarray | None:
        """A series chip: the dates :attr:`series` picks, each bands then validity, into ``image``."""
        scene = self.scenes[chip.scene]
        readers = self.handles.get(("image", chip.scene), lambda: tuple(scene.date_readers()))
        view = image.reshape(self.series.dates, self.num_bands + 1, *image.shape[1:])
        return read_series_chip(
            readers, self._window(chip), view, self.band_fill,
            lambda fractions: self.series.pick(fractions, chip.seed), scene.min_valid_dates,
        )  # fmt: skip

    def _read_mask(self, chip: Chip, mask: np.ndarray) -> None:
        """The chip's class indices into ``mask`` (all ``ignore_index`` without a label)."""
        scene, window = self.scenes[chip.scene], self._window(chip)
        if scene.label is None:
            mask.fill(self.class_map.ignore_index)
        elif is_remote(scene.label):  # a dropped connection or a cut-off body: open afresh and retry
            with_retries(
                lambda: self._read_label(chip.scene, window, mask),
                lambda: self.handles.drop(("label", chip.scene)), scene.label, f"window {window}",
            )  # fmt: skip
        else:
            self._read_label(chip.scene, window, mask)

    def _read_batch(
        self, chips: Sequence[Chip], image: np.ndarray, mask: np.ndarray
    ) -> list[np.ndarray | None]:
        """Every chip into ``image[i]``, ``mask[i]``; their invalid masks. With ``reads_in_flight`` > 1 the
        image and label reads of all chips are in flight at once (GDAL waits on the network without the
        GIL), so a batch costs about one round trip rather than two per chip."""
        if self.reads_in_flight == 1 or len(chips) == 1:
            return [self._read_into(c, image[i], mask[i]) for i, c in enumerate(chips)]
        pool = self._threads()
        images = [pool.submit(self._read_image, c, image[i]) for i, c in enumerate(chips)]
        masks = [pool.submit(self._read_mask, c, mask[i]) for i, c in enumerate(chips)]
        invalids = [f.result() for f in images]
        for f in masks:
            f.result()
        for i, invalid in enumerate(invalids):
            if invalid is not None:
                self._invalidate(image[i], mask[i], invalid, read=True)
        return invalids

    def _read_label(self, i: int, window: Window, mask: np.ndarray) -> None:
        if self.label_is_index[i]:  # already class indices: read straight into the batch
            self._label(i).read(1, window=window, out=mask)
        else:
            self.class_map(self._label(i).read(1, window=window), out=mask)

    def _invalidate(
        self, image: np.ndarray, mask: np.ndarray, invalid: np.ndarray, read: bool = False
    ) -> None:
        """``ignore_index`` in ``mask`` and the fill in ``image`` where ``invalid``. A series read has filled
        each date's invalid pixels already: a pixel with too few valid dates keeps the dates it has."""
        mask[invalid] = self.class_map.ignore_index
        if not (read and self.series is not None):
            np.copyto(image, self.fill, where=invalid)

    def _augment_into(
        self, image: np.ndarray, mask: np.ndarray, invalid: np.ndarray | None, seed: int
    ) -> None:
        symmetry = self.augment.symmetry(seed)
        if symmetry is not None:  # flips/rotations: permute the (C, H, W) chip in place, same result
            image[...] = apply_symmetry(image, symmetry)
            mask[...] = apply_symmetry(mask, symmetry)
            return
        valid = np.ones(mask.shape, dtype=bool) if invalid is None else ~invalid
        hwc, out_mask, out_valid = self.augment(np.moveaxis(image, 0, -1), mask, valid, seed)
        if out_mask.shape != mask.shape:
            raise GeosegError(
                f"aug changed the chip size from {mask.shape} to {out_mask.shape}; "
                "augmentations must keep data.chip_size (e.g. RandomResizedCrop(size=chip_size))."
            )
        image[...] = np.moveaxis(hwc, -1, 0)
        mask[...] = out_mask
        if not out_valid.all():
            self._invalidate(image, mask, ~out_valid)

    def __getitems__(self, chips: Sequence[Chip]) -> dict[str, torch.Tensor]:
        """A whole batch: ``image`` (B,C,H,W) raw, ``mask`` (B,H,W), ``chip`` (B,3) int64."""
        chips = [Chip(*c) for c in chips]
        size = self.chip_size
        image = _empty((len(chips), self.channels, size, size), BATCH_DTYPES[self.dtype])
        mask = _empty((len(chips), size, size), getattr(torch, self.class_map.dtype.name))
        image_np, mask_np = image.numpy(), mask.numpy()
        invalids = self._read_batch(chips, image_np, mask_np)
        if self.augment is not None:  # one pipeline, seeded per chip: applied in order in this thread
            for i, (chip, invalid) in enumerate(zip(chips, invalids, strict=True)):
                self._augment_into(image_np[i], mask_np[i], invalid, chip.seed)
        return {
            "image": image,
            "mask": mask,
            "chip": torch.tensor([[c.scene, c.row, c.col] for c in chips], dtype=torch.int64),
        }

    def _threads(self) -> ThreadPoolExecutor:
        """This process's pool of :attr:`reads_in_flight` reader threads (made on first use)."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(self.reads_in_flight, thread_name_prefix="geoseg-read")
            self._pool_pid = os.getpid()
        return self._pool

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pool"] = None  # threads never travel to a worker
        return state

    def __getitem__(self, chip: Chip) -> dict[str, torch.Tensor]:
        """One sample, the same as row 0 of ``__getitems__([chip])``."""
        return {k: v[0] for k, v in self.__getitems__([chip]).items()}

    def close(self) -> None:
        """Close every file handle this process holds (and its reader threads)."""
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=True)
        self._pool = None
        self.handles.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown GDAL may be gone
            self.handles.close()
