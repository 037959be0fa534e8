"""What inference knows of a trained model: the model and the band selection, statistics, nodata and
classes it was trained with, from a checkpoint (:mod:`~geoseg.inference.loaded`) or an ONNX export
(:mod:`~geoseg.inference.onnx_model`)."""

from __future__ import annotations

from dataclasses import dataclass

from geoseg.classes import ClassInfo
from geoseg.data.band_files import FileEntry
from geoseg.data.series import SeriesOptions
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
    series: SeriesOptions | None = None  # data.series of a model trained on series (None: one date)
    chip_size: int | None = None  # data.chip_size it was trained on (norm_stats=scene's window size)

    @property
    def num_bands(self) -> int:
        """Bands the model takes (of each date, for a series model)."""
        meta = getattr(self.model, "meta", {}) or {}
        return int(meta.get("bands_per_date") or self.model.in_channels)

    @property
    def dates(self) -> int | None:
        """Dates per chip of a series model, else None."""
        meta = getattr(self.model, "meta", {}) or {}
        return int(meta["series"]["dates"]) if meta.get("series") else None
