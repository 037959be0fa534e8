"""Per-band normalisation and albumentations pipelines restricted to transforms correct for N bands."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np

from geoseg.errors import GeosegError

# Transforms that only move pixels (or act per pixel on any channel count) and treat the mask
# with nearest interpolation. Colour transforms that assume RGB (HueSaturationValue, ToGray,
# CLAHE, ...) are wrong for multispectral bands and are refused.
N_BAND_SAFE = frozenset(
    {
        "Compose", "OneOf", "SomeOf", "Sequential",
        "HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4", "Rotate", "Affine",
        "ShiftScaleRotate", "SafeRotate", "RandomResizedCrop", "RandomCrop", "CenterCrop", "Resize",
        "ElasticTransform", "GridDistortion", "GaussNoise", "GaussianBlur", "Morphological",
        "CoarseDropout", "XYMasking",
    }
)  # fmt: skip


class Normalize:
    """``(x - mean) / std`` per band, in float32; stats come from ``stats.json`` (never a silent /255)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        std = np.asarray(std, dtype=np.float32)
        self.scale = (1.0 / np.where(std > 0, std, 1.0)).astype(np.float32)[:, None, None]

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        """A normalised float32 copy of (..., C, H, W) ``arr``."""
        return self.inplace(arr.astype(np.float32))

    def inplace(self, out: np.ndarray) -> np.ndarray:
        """Normalise float32 (..., C, H, W) ``out`` in place (two passes, no temporaries)."""
        if out.shape[-3] != self.mean.shape[0]:
            raise GeosegError(
                f"the chip has {out.shape[-3]} bands but the statistics have {self.mean.shape[0]}; "
                "recompute them with `geoseg stats` for the selected data.bands."
            )
        out -= self.mean
        out *= self.scale
        return out


def check_n_band_safe(transform: A.BasicTransform) -> None:
    """Refuse any transform (also nested in Compose/OneOf) that is not in :data:`N_BAND_SAFE`."""
    name = type(transform).__name__
    if name not in N_BAND_SAFE:
        raise GeosegError(
            f"aug: {name} is not safe for multispectral chips (it assumes RGB or mishandles masks); "
            f"use one of {sorted(N_BAND_SAFE)}."
        )
    for child in getattr(transform, "transforms", []) or []:
        check_n_band_safe(child)


class Augment:
    """Applies an albumentations Compose to (H, W, C) float32 image and (H, W) mask with a per-chip seed."""

    def __init__(self, pipeline: A.Compose) -> None:
        check_n_band_safe(pipeline)
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        self.pipeline.set_random_seed(int(seed))
        # uint16 keeps every class index and ignore_index, and OpenCV can warp it (it can't warp int64).
        out = self.pipeline(image=np.ascontiguousarray(image), mask=mask.astype(np.uint16))
        return out["image"], out["mask"].astype(np.int64)
