"""What inference knows of a trained model: the model and the band selection, statistics, nodata and
classes it was trained with, from a checkpoint (:mod:`~geoseg.inference.loaded`) or an ONNX export
(:mod:`~geoseg.inference.onnx_model`)."""

from __future__ import annotations

from dataclasses import dataclass

from geoseg.classes import ClassInfo
from geoseg.data.band_files import FileEntry
from geoseg.data.stats import BandStats
from geoseg.models.build import SegmentationModel


@dataclass
class LoadedModel:
    """An eval-mode model plus the band selection, statistics, nodata and classes it was trained with."""

    model: SegmentationModel  # or an OnnxSegmenter (geoseg.inference.onnx_model), which acts like one
    path: str
    bands: list[int | str] | None  # data.bands as configured (None = all bands)
    stats: BandStats
    nodata: float | None  # data.nodata override of the training config (None = each file's own)
    classes: ClassInfo
    files: tuple[FileEntry, ...] | None = None  # data.files of the training config (multi-file scenes)
    grid: str = "finest"  # data.grid of the training config
    invalid: str = "any"  # data.invalid of the training config ("all" for checkpoints made before it)
    tile: int | None = None  # tile/overlap defaults an exported model carries (None: predict's own)
    overlap: int | None = None

    @property
    def num_bands(self) -> int:
        return self.model.in_channels
