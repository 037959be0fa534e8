"""Normalisation and N-band-safe augmentation."""

import albumentations as A
import numpy as np
import pytest

from geoseg.data.transforms import Augment, Normalize
from geoseg.errors import GeosegError


def test_normalize_per_band():
    arr = np.stack([np.full((4, 4), 10, np.uint16), np.full((4, 4), 7, np.uint16)])
    out = Normalize([5.0, 7.0], [2.5, 0.0])(arr)
    assert out.dtype == np.float32
    assert (out[0] == 2.0).all() and (out[1] == 0.0).all()  # zero std does not divide by zero
    with pytest.raises(GeosegError, match="the chip has 2 bands but the statistics have 3"):
        Normalize([0, 0, 0], [1, 1, 1])(arr)


def test_geometric_transforms_move_image_and_mask_together():
    rng = np.random.default_rng(0)
    image = rng.random((8, 8, 13)).astype(np.float32)
    mask = (image[..., 0] > 0.5).astype(np.int64)
    aug = Augment(A.Compose([A.HorizontalFlip(p=1.0), A.RandomRotate90(p=1.0)]))
    out_img, out_mask = aug(image, mask, seed=1)
    assert out_img.shape == (8, 8, 13) and out_mask.dtype == np.int64
    np.testing.assert_array_equal(out_mask, (out_img[..., 0] > 0.5).astype(np.int64))
    again_img, _ = aug(image, mask, seed=1)
    np.testing.assert_array_equal(out_img, again_img)  # the per-chip seed makes it reproducible


def test_rgb_only_transforms_are_refused():
    with pytest.raises(GeosegError, match="aug: HueSaturationValue is not safe for multispectral chips"):
        Augment(A.Compose([A.HorizontalFlip(), A.OneOf([A.HueSaturationValue()])]))
