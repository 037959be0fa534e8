"""ChipDataset: exact windowed reads, nodata -> ignore_index, label alignment, workers and handles."""

import pickle

import albumentations as A
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch.utils.data import DataLoader

from conftest import write_tif
from geoseg.data.dataset import ChipDataset, HandleCache, collate_batch
from geoseg.data.labels import ClassMap
from geoseg.data.samplers import GridChipSampler, RandomChipSampler
from geoseg.data.scenes import inspect_scene
from geoseg.data.transforms import Augment
from geoseg.data.windows import Chip

FILL = [300.4, 500.0, 700.6]  # band means: invalid pixels get these, rounded to the raw dtype


def _dataset(image, label, size=16, codes=(0, 1, 2), augment=None, fill=FILL, **kw):
    label = None if label is None else str(label)
    scene = inspect_scene(str(image), label, class_codes=codes, chip_size=size, **kw)
    return ChipDataset([scene], size, ClassMap(codes), fill=fill, augment=augment)


def test_window_read_equals_slice_of_full_read(scene_pair):
    image, label, img, lab = scene_pair
    ds = _dataset(image, label)
    for r, c in [(0, 0), (13, 21), (24, 32)]:
        sample = ds[Chip(0, r, c)]
        assert sample["image"].dtype == torch.uint16 and sample["mask"].dtype == torch.uint8
        window = img[:, r : r + 16, c : c + 16]
        ok = ~np.any(window == 0, axis=0)
        expected = np.where(ok, window, np.array([300, 500, 701], np.uint16)[:, None, None])
        np.testing.assert_array_equal(sample["image"].numpy(), expected)
        np.testing.assert_array_equal(sample["mask"].numpy(), np.where(ok, lab[r : r + 16, c : c + 16], 255))
        assert sample["chip"].tolist() == [0, r, c]


def test_a_batch_equals_its_chips_read_one_by_one(scene_pair):
    image, label, _, _ = scene_pair
    aug = Augment(A.Compose([A.HorizontalFlip(p=0.5), A.RandomRotate90(p=0.5)]))
    ds = _dataset(image, label, augment=aug)
    chips = [Chip(0, 0, 0, 1), Chip(0, 5, 30, 2), Chip(0, 24, 7, 3)]
    batch = ds.__getitems__(chips)
    for i, chip in enumerate(chips):
        one = ds[chip]
        for key in ("image", "mask", "chip"):
            assert torch.equal(batch[key][i], one[key])
    assert batch["image"].shape == (3, 3, 16, 16)


def test_nodata_pixels_become_ignore_index_and_the_band_mean(scene_pair):
    image, label, _, lab = scene_pair
    sample = _dataset(image, label)[Chip(0, 0, 0)]
    mask = sample["mask"].numpy()
    assert (mask[:8, :10] == 255).all()  # image nodata corner
    assert (sample["image"].numpy()[:, :8, :10] == np.array([300, 500, 701])[:, None, None]).all()
    expected = lab[:16, :16].copy()
    expected[:8, :10] = 255
    np.testing.assert_array_equal(mask, expected)
    corner = _dataset(image, label)[Chip(0, 24, 32)]["mask"].numpy()
    assert (corner[-3:, -3:] == 255).all()  # label nodata


def test_nan_pixels_are_nodata_in_float_images(tmp_path):
    img = np.ones((2, 16, 16), dtype=np.float32)
    img[1, 3, 4] = np.nan
    img[0, 5, 6] = np.inf
    lab = np.zeros((16, 16), dtype=np.uint8)
    ds = _dataset(
        write_tif(tmp_path / "f.tif", img), write_tif(tmp_path / "l.tif", lab), codes=(0,), fill=[0.5, 2]
    )
    sample = ds[Chip(0, 0, 0)]
    assert sample["image"].dtype == torch.float32
    assert sample["mask"][3, 4] == 255 and sample["mask"][5, 6] == 255 and sample["mask"][0, 0] == 0
    assert torch.isfinite(sample["image"]).all() and sample["image"][0, 5, 6] == 0.5


def test_unmapped_codes_and_gaps_map_through_the_class_list():
    cmap = ClassMap([0, 1, 2, 3, 4, 8], ignore_index=255)
    for dtype in (np.int16, np.uint8, np.float32, np.int32):
        label = np.array([[0, 8, 5], [4, 9 if dtype == np.uint8 else -1, 1]], dtype=dtype)
        out = cmap(label)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, [[0, 5, 255], [4, 255, 1]])
    assert ClassMap(list(range(300)), ignore_index=-100).dtype == np.int16


@pytest.mark.parametrize("grid", ["coarser", "offset"])
def test_label_on_another_grid_lands_on_the_right_pixels(tmp_path, grid):
    h = w = 32
    rng = np.random.default_rng(2)
    img = rng.integers(1, 100, size=(1, h, w), dtype=np.uint16)
    if grid == "coarser":  # 20 m label under a 10 m image
        coarse = rng.integers(0, 4, size=(h // 2, w // 2), dtype=np.uint8)
        expected = np.repeat(np.repeat(coarse, 2, 0), 2, 1)
        label = write_tif(tmp_path / "l.tif", coarse, transform=from_origin(500_000, 5_000_000, 20, 20))
    else:  # larger label, origin 5 px up-left
        big = rng.integers(0, 4, size=(h + 10, w + 10), dtype=np.uint8)
        expected = big[5 : 5 + h, 5 : 5 + w]
        origin = from_origin(500_000 - 50, 5_000_000 + 50, 10, 10)
        label = write_tif(tmp_path / "l.tif", big, transform=origin)
    image = write_tif(tmp_path / "i.tif", img)
    ds = _dataset(image, label, size=16, codes=(0, 1, 2, 3), fill=[50])
    assert not ds.scenes[0].label_on_grid
    for r, c in [(0, 0), (16, 16), (7, 11)]:
        np.testing.assert_array_equal(ds[Chip(0, r, c)]["mask"].numpy(), expected[r : r + 16, c : c + 16])


def test_label_partly_outside_its_extent_is_ignored(tmp_path):
    img = np.ones((1, 32, 32), dtype=np.uint16)
    small = np.zeros((16, 16), dtype=np.uint8)  # covers only the top-left quarter, no nodata declared
    image = write_tif(tmp_path / "i.tif", img)
    label = write_tif(tmp_path / "l.tif", small)
    mask = _dataset(image, label, size=32, codes=(0,), fill=[1])[Chip(0, 0, 0)]["mask"].numpy()
    assert (mask[:16, :16] == 0).all() and (mask[16:, :] == 255).all() and (mask[:, 16:] == 255).all()


def test_pixels_a_warp_brings_in_are_invalid(scene_pair):
    image, label, _, _ = scene_pair
    warp = A.Compose([A.Affine(translate_px={"x": 5, "y": 0}, fill=0, fill_mask=255, p=1.0)])
    ds = _dataset(image, label, augment=Augment(warp))
    sample = ds[Chip(0, 20, 30, 7)]
    assert (sample["mask"][:, :5] == 255).all()
    assert (sample["image"].numpy()[:, :, :5] == np.array([300, 500, 701])[:, None, None]).all()
    assert (sample["mask"][:, 5:] != 255).any()


def _loader_samples(ds, sampler, workers):
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=collate_batch)
    return [(b["image"], b["mask"], b["chip"]) for b in loader]


def test_two_workers_yield_the_same_samples_as_zero(scene_pair):
    image, label, _, _ = scene_pair
    aug = Augment(A.Compose([A.HorizontalFlip(p=0.5), A.RandomRotate90(p=0.5)]))
    ds = _dataset(image, label, augment=aug)
    origins = np.array([[r, c] for r in range(0, 25, 3) for c in range(0, 33, 4)])
    sampler = RandomChipSampler([origins], [np.ones(len(origins))], num_samples=24, seed=5)
    a = _loader_samples(ds, sampler, 0)
    b = _loader_samples(ds, sampler, 2)
    assert len(a) == len(b) == 6
    for (ia, ma, ca), (ib, mb, cb) in zip(a, b, strict=True):
        assert torch.equal(ca, cb) and torch.equal(ia, ib) and torch.equal(ma, mb)


def test_grid_sampler_through_loader_reads_every_valid_pixel(scene_pair):
    image, label, img, lab = scene_pair
    ds = _dataset(image, label)
    seen = np.zeros(img.shape[1:], dtype=bool)
    for _, mask, chips in _loader_samples(ds, GridChipSampler([(0, 0, 40, 48)], 16), 0):
        for m, (_, r, c) in zip(mask, chips.tolist(), strict=True):
            seen[r : r + 16, c : c + 16] |= m.numpy() != 255
    valid = (img != 0).all(0) & (lab != 255)
    np.testing.assert_array_equal(seen, valid)


def test_scenes_must_agree_on_the_band_count(scene_pair, tmp_path):
    image, _, _, _ = scene_pair
    other = write_tif(tmp_path / "two.tif", np.ones((2, 16, 16), np.uint16))
    scenes = [inspect_scene(str(image), None), inspect_scene(str(other), None)]
    with pytest.raises(Exception, match=r"the scenes select \[2, 3\] bands"):
        ChipDataset(scenes, 16, ClassMap([0]), fill=FILL)


def test_handle_cache_is_bounded_lazy_and_not_pickled(scene_pair):
    image, _, _, _ = scene_pair
    cache = HandleCache(max_open=2)
    opened = []

    def opener(i):
        def _open():
            opened.append(i)
            return (rasterio.open(image),)

        return _open

    handles = [cache.get(i, opener(i))[0] for i in range(3)]
    assert len(cache) == 2 and handles[0].closed and not handles[2].closed
    cache.get(2, opener(2))
    assert opened == [0, 1, 2]  # a hit does not reopen
    clone = pickle.loads(pickle.dumps(cache))
    assert len(clone) == 0 and clone.max_open == 2
    cache.close()
    assert handles[2].closed


def test_invalid_rule_any_and_all(tmp_path):
    """data.invalid=any (default): one band at nodata makes the pixel invalid; all: only every band
    (GDAL's dataset mask agrees with ``all``)."""
    img = np.full((3, 16, 16), 9, dtype=np.uint16)
    img[:, 0, 0] = 0  # every band nodata -> invalid under both rules
    img[1, 2, 2] = 0  # one band nodata -> invalid under any, valid under all
    path = write_tif(tmp_path / "i.tif", img, nodata=0)
    with rasterio.open(path) as src:
        dataset_mask = src.dataset_mask()
    anyrule = _dataset(path, None, codes=(0,), fill=[5, 5, 5])[Chip(0, 0, 0)]["image"].numpy()
    assert (anyrule[:, 0, 0] == 5).all() and (anyrule[:, 2, 2] == 5).all()
    assert ((anyrule == 5).all(0) == (img == 0).any(0)).all()
    allrule = _dataset(path, None, codes=(0,), fill=[5, 5, 5], invalid="all")[Chip(0, 0, 0)]["image"].numpy()
    assert (allrule[:, 0, 0] == 5).all() and allrule[1, 2, 2] == 0
    np.testing.assert_array_equal(dataset_mask == 0, allrule[0] == 5)


@pytest.mark.parametrize("grid", ["same", "offset"])
def test_labels_read_directly_equal_labels_remapped(tmp_path, grid):
    """A label already holding class indices skips the lookup table; the result must not change."""
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 3, size=(40, 40), dtype=np.uint8)
    lab[:4] = 255
    origin = (
        from_origin(500_000, 5_000_000, 10, 10) if grid == "same" else from_origin(499_950, 5_000_050, 10, 10)
    )
    label = write_tif(tmp_path / "l.tif", lab, transform=origin, nodata=255)
    image = write_tif(tmp_path / "i.tif", rng.integers(1, 99, size=(3, 40, 40), dtype=np.uint16))
    ds = _dataset(image, label)
    assert ds.label_is_index == [True]
    chips = [Chip(0, r, c) for r in (0, 10, 24) for c in (0, 7, 24)]
    direct = ds.__getitems__(chips)["mask"]
    ds.label_is_index = [False]
    assert torch.equal(direct, ds.__getitems__(chips)["mask"])
    gaps = _dataset(image, label, codes=(0, 2, 1))  # codes out of index order need the table
    assert gaps.label_is_index == [False]


def test_reads_in_flight_give_the_batch_one_reader_gives(scene_pair):
    """Images and labels read by 4 threads at once (as for remote scenes): the same batch, nodata and
    augmentation included, as one reader in order; the threads' handles close with the dataset."""
    image, label, _, _ = scene_pair
    scene = inspect_scene(image, label, class_codes=[0, 1, 2], nodata=0)
    cmap = ClassMap([0, 1, 2])
    aug = Augment(A.Compose([A.HorizontalFlip(p=0.5), A.RandomRotate90(p=0.5)]))
    chips = [Chip(0, r, c, seed) for seed, (r, c) in enumerate([(0, 0), (4, 8), (20, 30), (8, 0), (16, 16)])]
    one = ChipDataset([scene], 16, cmap, fill=[1.0, 2.0, 3.0], augment=aug).__getitems__(chips)
    threaded = ChipDataset([scene], 16, cmap, fill=[1.0, 2.0, 3.0], augment=aug, reads_in_flight=4)
    many = threaded.__getitems__(chips)
    assert (many["mask"] == 255).any()  # the nodata corner is in the batch
    for key in ("image", "mask", "chip"):
        assert torch.equal(one[key], many[key]), key
    assert len(threaded.handles) >= 2  # image and label handles, opened in the reader threads
    threaded.close()
    assert len(threaded.handles) == 0 and threaded._pool is None
