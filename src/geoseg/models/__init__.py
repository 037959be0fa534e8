"""Segmentation models: smp architectures for N bands with the norm layer as a config choice."""

from geoseg.models.build import SegmentationModel, build_model, model_from_config
from geoseg.models.convert import convert_norm, norm_counts
from geoseg.models.recalibrate import recalibrate_bn
from geoseg.models.temporal import SeriesNormalize, TemporalNet, TemporalOptions

__all__ = [
    "SegmentationModel",
    "SeriesNormalize",
    "TemporalNet",
    "TemporalOptions",
    "build_model",
    "convert_norm",
    "model_from_config",
    "norm_counts",
    "recalibrate_bn",
]
