"""Band normalisation (a torch module) and N-band-safe, geometric-only augmentation."""

import collections

import albumentations as A
import numpy as np
import pytest
import torch

from geoseg.data.normalize import batch_dtype, raw_fill_values
from geoseg.data.transforms import Augment
from geoseg.errors import GeosegError
from geoseg.models.band_normalize import BandNormalize


def test_band_normalize_per_band_in_float32():
    x = torch.stack([torch.full((4, 4), 10, dtype=torch.uint16), torch.full((4, 4), 7, dtype=torch.uint16)])
    norm = BandNormalize([5.0, 7.0], [2.5, 0.0])
    out = norm(x)
    assert out.dtype == torch.float32
    assert (out[0] == 2.0).all() and (out[1] == 0.0).all()  # zero std does not divide by zero
    assert norm(x[None].repeat(3, 1, 1, 1)).shape == (3, 2, 4, 4)
    assert set(norm.state_dict()) == {"mean", "scale"}  # travels with the model's weights
    with pytest.raises(GeosegError, match="the input has 2 bands but the band statistics have 3"):
        BandNormalize([0, 0, 0], [1, 1, 1])(x)


def test_fill_values_normalise_to_about_zero():
    mean, std = [300.4, 12.6], [10.0, 3.0]
    fill = raw_fill_values(mean, "uint16")
    assert fill.dtype == np.uint16 and fill.tolist() == [300, 13]
    out = BandNormalize(mean, std)(torch.from_numpy(fill.astype(np.int32))[:, None, None])
    assert out.abs().max() <= 0.5 / min(std)
    assert raw_fill_values([-5.0, 70000.0], "uint16").tolist() == [0, 65535]


def test_batch_dtype_keeps_cheap_raw_types():
    assert batch_dtype(["uint16", "uint16"]) == "uint16"
    assert batch_dtype(["uint8", "uint16"]) == "uint16"
    assert batch_dtype(["int8"]) == "int16"
    assert batch_dtype(["int32"]) == "float32" and batch_dtype(["float64"]) == "float32"


def test_geometric_transforms_move_image_mask_and_validity_together():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 5000, size=(8, 8, 13)).astype(np.uint16)
    mask = (image[..., 0] > 2500).astype(np.uint8)
    valid = image[..., 1] > 1000
    aug = Augment(A.Compose([A.HorizontalFlip(p=1.0), A.RandomRotate90(p=1.0)]))
    out_img, out_mask, out_valid = aug(image, mask, valid, seed=1)
    assert out_img.shape == (8, 8, 13) and out_img.dtype == np.uint16 and out_mask.dtype == np.uint8
    np.testing.assert_array_equal(out_mask, (out_img[..., 0] > 2500).astype(np.uint8))
    np.testing.assert_array_equal(out_valid, out_img[..., 1] > 1000)
    again_img, _, _ = aug(image, mask, valid, seed=1)
    np.testing.assert_array_equal(out_img, again_img)  # the per-chip seed makes it reproducible


@pytest.mark.parametrize("bad", [A.HueSaturationValue(), A.GaussNoise(), A.RandomBrightnessContrast()])
def test_pixel_value_and_rgb_transforms_are_refused(bad):
    with pytest.raises(GeosegError, match=f"aug: {type(bad).__name__} is not allowed in the chip loader"):
        Augment(A.Compose([A.HorizontalFlip(), A.OneOf([bad])]))


def test_each_transform_draws_independently_so_every_symmetry_occurs():
    """albumentations' set_random_seed gave each flip the same draw: both flips always agreed, so a
    mirror image never occurred (4 of the 8 symmetries of the square, 58% identity)."""
    aug = Augment(A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomRotate90(p=0.5)]))
    corners = np.arange(4, dtype=np.uint8).reshape(2, 2, 1)
    outputs = collections.Counter(
        aug(corners, corners[..., 0], np.ones((2, 2), bool), seed)[0].tobytes() for seed in range(800)
    )
    assert len(outputs) == 8
    assert outputs[corners.tobytes()] < 200  # identity: 1/8 expected
