"""Per-band normalisation and albumentations pipelines restricted to transforms correct for N bands."""

from __future__ import annotations

import random

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


# Transforms whose only effect is one of the 8 symmetries of the square, drawn without looking at the
# image: a pipeline of these alone is applied to (C, H, W) chips directly (see Augment.symmetry).
DIHEDRAL = frozenset({"Compose", "OneOf", "Sequential", "HorizontalFlip", "VerticalFlip", "RandomRotate90",
                      "Transpose", "D4"})  # fmt: skip
# (transpose, flip rows, flip columns): the 8 symmetries of the square, applied in that order
SYMMETRIES = [(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True)]
_CORNERS = np.array([[0, 1], [2, 3]], dtype=np.uint8)


def apply_symmetry(arr: np.ndarray, symmetry: tuple[bool, bool, bool]) -> np.ndarray:
    """A view of ``arr`` (..., H, W) under one of :data:`SYMMETRIES`."""
    transpose, flip_rows, flip_cols = symmetry
    if transpose:
        arr = arr.swapaxes(-1, -2)
    if flip_rows:
        arr = arr[..., ::-1, :]
    if flip_cols:
        arr = arr[..., ::-1]
    return arr


def _is_dihedral(transform: A.BasicTransform) -> bool:
    return type(transform).__name__ in DIHEDRAL and all(
        _is_dihedral(child) for child in getattr(transform, "transforms", []) or []
    )


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


def seed_pipeline(pipeline: A.Compose, seed: int) -> None:
    """Seed ``pipeline`` for one chip: one generator shared by all its transforms, drawn in turn.

    albumentations' ``set_random_seed`` gives every child transform its own generator with the same
    seed, so they all draw the same first number: with the flips at p=0.5, HorizontalFlip and
    VerticalFlip always agreed and a mirror image never occurred (4 of the 8 symmetries, 58%
    identity). Shared generators make each transform's draw independent.
    """
    if hasattr(pipeline, "set_random_state"):
        pipeline.set_random_state(np.random.default_rng(int(seed)), random.Random(int(seed)))
    else:  # albumentations before set_random_state
        pipeline.set_random_seed(int(seed))


class Augment:
    """Applies an albumentations Compose to a raw (H, W, C) chip, its mask and its validity, per-chip seeded.

    Mask and validity travel as one two-channel mask, resampled by nearest neighbour; pixels a warp
    brings in from outside the chip get the pipeline's ``fill_mask`` in both channels, so they come
    back invalid (validity is exactly 1 only where the source pixel was valid).
    """

    def __init__(self, pipeline: A.Compose) -> None:
        check_n_band_safe(pipeline)
        self.pipeline = pipeline
        self.dihedral = _is_dihedral(pipeline)

    def symmetry(self, seed: int) -> tuple[bool, bool, bool] | None:
        """For a pipeline of flips, transposes and 90-degree rotations only (the default ``aug=flips``):
        the symmetry it draws for ``seed``, found by running it on a 2x2 image, so it can be applied to
        a (C, H, W) chip as a view, with no (H, W, C) round trip; None for any other pipeline.

        Those transforms draw their parameters without looking at the image, so the 2x2 image gets the
        same symmetry the chip would: the result is identical to :meth:`__call__` (tested).
        """
        if not self.dihedral:
            return None
        seed_pipeline(self.pipeline, seed)
        corners = self.pipeline(image=_CORNERS[..., None])["image"].reshape(2, 2)
        return next(s for s in SYMMETRIES if np.array_equal(apply_symmetry(_CORNERS, s), corners))

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, valid: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seed_pipeline(self.pipeline, seed)
        both = np.stack([mask, valid.astype(mask.dtype)], axis=-1)
        out = self.pipeline(image=np.ascontiguousarray(image), mask=both)
        return out["image"], out["mask"][..., 0], out["mask"][..., 1] == 1
