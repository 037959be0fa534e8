"""Per-band normalisation and albumentations pipelines restricted to transforms correct for N bands."""

from __future__ import annotations

import albumentations as A
import numpy as np

from geoseg.errors import GeosegError

# Transforms that only move pixels, exactly for any band count and dtype, with the mask resampled
# by nearest neighbour. The loader hands over raw values, so pixel-value transforms (noise, blur,
# brightness) and RGB-only ones (HueSaturationValue, ToGray, CLAHE, ...) are refused here: they
# belong after BandNormalize, on the device.
N_BAND_SAFE = frozenset(
    {
        "Compose", "OneOf", "SomeOf", "Sequential",
        "HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose", "D4", "Rotate", "SafeRotate",
        "Affine", "ShiftScaleRotate", "RandomResizedCrop", "ElasticTransform", "GridDistortion",
        "Perspective",
    }
)  # fmt: skip


def check_n_band_safe(transform: A.BasicTransform) -> None:
    """Refuse any transform (also nested in Compose/OneOf) that is not in :data:`N_BAND_SAFE`."""
    name = type(transform).__name__
    if name not in N_BAND_SAFE:
        raise GeosegError(
            f"aug: {name} is not allowed in the chip loader (it changes pixel values or assumes RGB, "
            f"and chips are raw multispectral bands); use geometric transforms: {sorted(N_BAND_SAFE)}."
        )
    for child in getattr(transform, "transforms", []) or []:
        check_n_band_safe(child)


class Augment:
    """Applies an albumentations Compose to a raw (H, W, C) chip, its mask and its validity, per-chip seeded.

    Mask and validity travel as one two-channel mask, resampled by nearest neighbour; pixels a warp
    brings in from outside the chip get the pipeline's ``fill_mask`` in both channels, so they come
    back invalid (validity is exactly 1 only where the source pixel was valid).
    """

    def __init__(self, pipeline: A.Compose) -> None:
        check_n_band_safe(pipeline)
        self.pipeline = pipeline

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, valid: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.pipeline.set_random_seed(int(seed))
        both = np.stack([mask, valid.astype(mask.dtype)], axis=-1)
        out = self.pipeline(image=np.ascontiguousarray(image), mask=both)
        return out["image"], out["mask"][..., 0], out["mask"][..., 1] == 1
