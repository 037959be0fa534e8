"""Scenes of many dates (data.series, issue 38) on tiny GeoTIFFs: grouping and parsing ``{date}``, ragged
series, per-date masks, date selection, one flip for every date, train and predict end to end."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from conftest import SHARED_DATA, UTM, compose_config, run_error, save_tiny_checkpoint, tiny_run, write_tif
from geoseg.config import as_dict
from geoseg.data.build import build_augment, build_split, load_scenes, train_stats
from geoseg.data.data_options import class_map_from
from geoseg.data.dataset import ChipDataset
from geoseg.data.series import SeriesRead, series_read
from geoseg.data.transforms import Augment
from geoseg.data.windows import Chip
from geoseg.errors import GeosegError

ORIGIN = from_origin(500_000, 5_000_000, 10, 10)
COARSE = from_origin(500_000, 5_000_000, 20, 20)  # the same extent at half the resolution (Sentinel-2 SCL)
H = W = 64
IGNORE = 255


def iso(text: str, fmt: str = "%Y%m%d") -> str:
    return dt.datetime.strptime(text, fmt).date().isoformat()


def label_array(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=(H, W)).astype(np.uint8)  # demo codes 0..3


def data_cfg(root: Path, images: str, labels: str | None = "labels/{scene}.tif", series=None, **data) -> dict:
    """The shipped ``data`` config (demo classes) for scenes under ``root`` with ``images`` as both
    splits' pattern, ``series`` laid over ``data.series`` (``mask`` merged) and ``data`` over the rest."""
    cfg = as_dict(compose_config("train", *tiny_run(root)).data)
    split = {"images": images, "labels": labels, "region": None}
    cfg["splits"] = {"train": dict(split), "val": dict(split)}
    series = dict(series or {})
    mask = {**cfg["series"]["mask"], **series.pop("mask", {})}
    cfg["series"] = {**cfg["series"], **series, "mask": mask}
    cfg["cache_dir"] = str(root / "cache")
    cfg.update(data)
    return cfg


def one_line_error(call, *args) -> str:
    with pytest.raises(GeosegError) as info:
        call(*args)
    text = str(info.value)
    assert "\n" not in text, text
    return text


def chip_of(scenes, read: SeriesRead, fill, row=0, col=0, size=H, seed=0, augment=None, scene=0):
    """One chip as numpy: image (T, C + 1, size, size) and mask."""
    cmap = class_map_from({"classes": CLASSES, "ignore_index": IGNORE})
    ds = ChipDataset(scenes, size, cmap, fill=list(fill), augment=augment, series=read)
    out = ds[Chip(scene, row, col, seed)]
    ds.close()
    bands = len(fill)
    return out["image"].numpy().reshape(read.dates, bands + 1, size, size), out["mask"].numpy()


CLASSES = [{"code": c, "name": f"c{c}", "color": [c, c, c]} for c in range(4)]


# --- 1. grouping the files of a place by date, and reading the date -------------------------------


def write_places(root: Path, places: dict[str, list[str]], files=("B04", "B08"), seed=0) -> dict:
    """``<place>_<date>_<file>.tif`` float32 files and ``labels/<place>.tif``; arrays by (place, date)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for place, dates in places.items():
        write_tif(root / "labels" / f"{place}.tif", label_array())
        for text in dates:
            stack = rng.normal(100, 20, size=(len(files), H, W)).astype(np.float32)
            for b, name in enumerate(files):
                write_tif(root / f"{place}_{text}_{name}.tif", stack[b], ORIGIN)
            arrays[place, text] = stack
    return arrays


def test_dates_of_two_places_group_and_sort_by_calendar_date_with_their_files(tmp_path):
    # mixed auto formats: '2024-06-01' sorts before '20240515' as text, after it as a date
    texts = ["2024-06-01", "20240515", "2024_07_10"]
    arrays = write_places(tmp_path, {"T33TWM": texts, "T33TWN": texts})
    cfg = data_cfg(tmp_path, "T33TW?_{date}_{file}.tif", files=["B04", "B08"])
    scenes = load_scenes(cfg, "train", progress=False)
    assert [s.title for s in scenes] == ["T33TWM", "T33TWN"]
    by_date = sorted(texts, key=lambda t: iso(t.replace("-", "").replace("_", "")))
    assert by_date != sorted(texts)  # the test means something: name order is not time order
    for scene, place in zip(scenes, ["T33TWM", "T33TWN"], strict=True):
        assert [d.text for d in scene.dates] == by_date
        assert [d.date for d in scene.dates] == ["2024-05-15", "2024-06-01", "2024-07-10"]
        assert [Path(f.path).name for f in scene.dates[0].files] == [
            f"{place}_{by_date[0]}_B04.tif", f"{place}_{by_date[0]}_B08.tif"]  # fmt: skip
        assert scene.label == str(tmp_path / "labels" / f"{place}.tif")
    # the chip holds each date's own bands, in time order, each followed by validity 1
    image, mask = chip_of(scenes, SeriesRead(3), fill=[0.0, 0.0], scene=1)
    for slot, text in enumerate(by_date):
        np.testing.assert_array_equal(image[slot, :2], arrays["T33TWN", text])
        assert (image[slot, 2] == 1).all()
    np.testing.assert_array_equal(mask, label_array())


def test_order_names_sort_as_numbers_and_series_dates_give_them_calendar_dates(tmp_path):
    texts = ["0", "1", "2", "10"]  # as text 10 comes before 2
    arrays = write_places(tmp_path, {"s2": texts}, files=("x",))
    cfg = data_cfg(tmp_path, "s2_{date}_x.tif", "labels/s2.tif", series={"date_format": "order"})
    (scene,) = load_scenes(cfg, "train", progress=False)
    assert [d.text for d in scene.dates] == ["0", "1", "2", "10"]
    assert [d.date for d in scene.dates] == [None] * 4 and scene.dates[3].label == "#10"
    image, _ = chip_of([scene], SeriesRead(4), fill=[0.0])
    for slot, text in enumerate(["0", "1", "2", "10"]):
        np.testing.assert_array_equal(image[slot, 0], arrays["s2", text][0])
    given = ["2024-04-03", "2024-05-20", "2024-06-11", "2024-08-30"]
    cfg = data_cfg(
        tmp_path, "s2_{date}_x.tif", "labels/s2.tif", series={"date_format": "order", "dates": given}
    )
    (scene,) = load_scenes(cfg, "train", progress=False)
    assert [d.date for d in scene.dates] == given
    short = data_cfg(
        tmp_path, "s2_{date}_x.tif", "labels/s2.tif", series={"date_format": "order", "dates": given[:3]}
    )
    assert "data.series.dates lists 3 dates" in one_line_error(load_scenes, short, "train", False)


def test_a_strptime_date_format_reads_day_of_year_names(tmp_path):
    days = [dt.date(2024, 6, 1), dt.date(2023, 12, 31), dt.date(2024, 2, 29)]
    texts = [d.strftime("%Y%j") for d in days]
    write_places(tmp_path, {"p": texts}, files=("x",))
    cfg = data_cfg(tmp_path, "p_{date}_x.tif", "labels/p.tif", series={"date_format": "%Y%j"})
    (scene,) = load_scenes(cfg, "train", progress=False)
    assert [d.date for d in scene.dates] == sorted(d.isoformat() for d in days)
    assert [d.text for d in scene.dates] == [d.strftime("%Y%j") for d in sorted(days)]
    # calendar dates, so a season can be kept (an order could not be filtered by month)
    cfg = data_cfg(tmp_path, "p_{date}_x.tif", "labels/p.tif", series={"date_format": "%Y%j", "months": [6]})
    (scene,) = load_scenes(cfg, "train", progress=False)
    assert [d.date for d in scene.dates] == ["2024-06-01"]


def test_a_date_text_that_is_no_date_is_one_line_naming_the_option(tmp_path):
    write_places(tmp_path, {"p": ["20240601", "june"]}, files=("x",))
    line = one_line_error(load_scenes, data_cfg(tmp_path, "p_{date}_x.tif", "labels/p.tif"), "train", False)
    assert "'june'" in line and "data.series.date_format" in line
    cfg = data_cfg(tmp_path, "p_{date}_x.tif", "labels/p.tif", series={"date_format": "%d%m%Y"})
    line = one_line_error(load_scenes, cfg, "train", False)
    assert "data.series.date_format='%d%m%Y'" in line


def test_a_missing_file_of_one_date_is_one_line(tmp_path):
    write_places(tmp_path, {"T33TWM": ["20240601", "20240515", "20240710"]})
    (tmp_path / "T33TWM_20240515_B08.tif").unlink()
    cfg = data_cfg(tmp_path, "T33TWM_{date}_{file}.tif", files=["B04", "B08"])
    line = one_line_error(load_scenes, cfg, "train", False)
    assert "'20240515'" in line and "T33TWM_20240515_B08.tif" in line and "data.files" in line


# --- 2. ragged series ------------------------------------------------------------------------------


def test_a_shorter_series_is_padded_with_band_means_and_validity_zero(tmp_path):
    places = {"a": ["20240501", "20240601", "20240701"], "b": ["20240510", "20240610"]}
    arrays = write_places(tmp_path, places, files=("x", "y"))
    cfg = data_cfg(tmp_path, "?_{date}_{file}.tif", files=["x", "y"], chip_size=32, batch_size=3)
    scenes = load_scenes(cfg, "train", progress=False)
    assert [(s.title, len(s.dates)) for s in scenes] == [("a", 3), ("b", 2)]
    stats = train_stats(cfg, progress=False, scenes=scenes)
    every = np.stack([a for a in arrays.values()])  # statistics over every date of every place
    np.testing.assert_allclose(stats.mean, every.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    read = series_read(cfg, scenes, training=True)
    assert read.dates == 3
    split = build_split(cfg, "val", stats, None, seed=0, scenes=scenes, series=read)
    assert split.dataset.series.training is False  # grid chips: no random date picks
    seen = set()
    for batch in split.loader:
        image = batch["image"].numpy()
        assert image.shape[1:] == (3 * 3, 32, 32)
        for chip, im in zip(batch["chip"].numpy(), image.reshape(len(image), 3, 3, 32, 32), strict=True):
            k, row, col = (int(v) for v in chip)
            seen.add(k)
            place = scenes[k].title
            texts = [d.text for d in scenes[k].dates]
            for slot, text in enumerate(texts):
                window = arrays[place, text][:, row : row + 32, col : col + 32]
                np.testing.assert_array_equal(im[slot, :2], window)
                assert (im[slot, 2] == 1).all()
            for slot in range(len(texts), 3):  # the padded slot: band means, invalid everywhere
                means = np.broadcast_to(np.float32(stats.mean)[:, None, None], im[slot, :2].shape)
                np.testing.assert_array_equal(im[slot, :2], means)
                assert (im[slot, 2] == 0).all()
    assert seen == {0, 1}


# --- 3. per-date masks -------------------------------------------------------------------------------


def write_cloudy(root: Path, texts, clouds, codes, name: str, mask_name: str | None = None, seed: int = 1):
    """One place of single-band float32 dates; date k's mask file holds ``codes[k]`` (a coarse (H/2, W/2)
    array of codes) and its band 1e6 under the pixels ``clouds`` says are invalid (so a mask that is not
    applied shows in the statistics); returns the bands and the invalid pixels per date at full size."""
    rng = np.random.default_rng(seed)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    write_tif(root / "labels" / "p.tif", label_array())
    bands, invalid = [], []
    for text, code in zip(texts, codes, strict=True):
        fine_codes = np.kron(code, np.ones((2, 2), code.dtype))
        bad = np.isin(fine_codes, clouds)
        band = rng.normal(500, 50, size=(H, W)).astype(np.float32)
        band[bad] = 1e6
        (root / name.format(t=text, f="B08")).parent.mkdir(parents=True, exist_ok=True)
        write_tif(root / name.format(t=text, f="B08"), band, ORIGIN)
        mask_path = root / (mask_name.format(t=text) if mask_name else name.format(t=text, f="SCL"))
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        write_tif(mask_path, code, COARSE)
        bands.append(band)
        invalid.append(bad)
    return np.stack(bands), np.stack(invalid)


def scl_codes(k: int) -> np.ndarray:
    """Date k's coarse SCL-like codes: vegetation (4) with a cloud (8, 9) or shadow (3) block per date."""
    code = np.full((H // 2, W // 2), 4, np.uint8)
    if k == 0:
        code[0:10, 0:12] = 8
        code[20:, 25:] = 9
    elif k == 1:
        code[5:15, 5:20] = 3
        code[30, 30] = 8
    return code


def check_masked_chip(scenes, cfg, bands, invalid):
    stats = train_stats(cfg, progress=False, scenes=scenes)
    valid_pixels = bands[~invalid]  # every date's valid pixels, and no 1e6
    np.testing.assert_allclose(stats.mean, [valid_pixels.mean(dtype=np.float64)], rtol=1e-6)
    assert stats.max[0] == pytest.approx(float(valid_pixels.max()))
    image, mask = chip_of(scenes, SeriesRead(len(bands)), fill=stats.mean)
    mean = np.float32(stats.mean[0])
    for k in range(len(bands)):
        np.testing.assert_array_equal(image[k, 1], (~invalid[k]).astype(np.float32))
        np.testing.assert_array_equal(image[k, 0], np.where(invalid[k], mean, bands[k]))
    np.testing.assert_array_equal(mask, label_array())  # min_valid_dates=1: one clear date is enough
    return stats


def test_a_coarser_scl_file_per_date_masks_its_codes(tmp_path):
    texts = ["20240601", "20240611", "20240621"]
    bands, invalid = write_cloudy(
        tmp_path, texts, [3, 8, 9], [scl_codes(k) for k in range(3)], name="p_{t}_{f}.tif"
    )
    assert invalid[0].any() and invalid[1].any() and not invalid[2].any()
    cfg = data_cfg(tmp_path, "p_{date}_{file}.tif", files=["B08"],
                   series={"mask": {"file": "SCL", "invalid": [3, 8, 9]}})  # fmt: skip
    scenes = load_scenes(cfg, "train", progress=False)
    assert [Path(d.mask.file.path).name for d in scenes[0].dates] == [f"p_{t}_SCL.tif" for t in texts]
    check_masked_chip(scenes, cfg, bands, invalid)


def test_a_mask_path_template_with_date_masks_its_codes(tmp_path):
    texts = ["2024-06-01", "2024-06-11", "2024-06-21"]
    bands, invalid = write_cloudy(tmp_path, texts, [3, 8, 9], [scl_codes(k) for k in range(3)],
                                  name="img/p_{t}.tif", mask_name="clouds/{t}_scl.tif")  # fmt: skip
    cfg = data_cfg(
        tmp_path, "img/p_{date}.tif", series={"mask": {"path": "clouds/{date}_scl.tif", "invalid": [3, 8, 9]}}
    )
    scenes = load_scenes(cfg, "train", progress=False)
    check_masked_chip(scenes, cfg, bands, invalid)
    # a mask file missing for one date is one line naming it
    (tmp_path / "clouds" / "2024-06-11_scl.tif").unlink()
    line = one_line_error(load_scenes, cfg, "train", False)
    assert "2024-06-11_scl.tif" in line and "data.series.mask" in line


def test_min_valid_dates_ignores_pixels_clear_on_too_few_dates(tmp_path):
    codes = [np.full((H // 2, W // 2), 4, np.uint8) for _ in range(3)]
    codes[0][:, :16] = 8  # left half cloudy on date 0
    codes[1][:16, :] = 8  # top half cloudy on date 1: top-left quarter clear only on date 2
    bands, invalid = write_cloudy(
        tmp_path, ["20240601", "20240611", "20240621"], [8], codes, name="p_{t}_{f}.tif"
    )
    cfg = data_cfg(tmp_path, "p_{date}_{file}.tif", files=["B08"],
                   series={"mask": {"file": "SCL", "invalid": [8]}, "min_valid_dates": 2})  # fmt: skip
    scenes = load_scenes(cfg, "train", progress=False)
    assert scenes[0].min_valid_dates == 2
    stats = train_stats(cfg, progress=False, scenes=scenes)
    image, mask = chip_of(scenes, SeriesRead(3), fill=stats.mean)
    few = (~invalid).sum(axis=0) < 2
    assert few.any() and not few.all()
    np.testing.assert_array_equal(mask, np.where(few, IGNORE, label_array()))
    # the target is ignored there, but the input keeps what the dates show: a date clear there stays
    # valid with its own value (context for the neighbours), the cloudy ones are band means, validity 0
    for k in range(3):
        clear = few & ~invalid[k]
        assert (image[k, 1][clear] == 1).all() and (image[k, 1][few & invalid[k]] == 0).all()
        np.testing.assert_array_equal(image[k, 0][clear], bands[k][clear])
        assert (image[k, 0][few & invalid[k]] == np.float32(stats.mean[0])).all()
    assert (few & ~invalid[2]).any()  # the top-left quarter: clear on date 2 only
    k_ok = ~few & ~invalid[0]
    np.testing.assert_array_equal(image[0, 0][k_ok], bands[0][k_ok])


# --- 4. which dates ----------------------------------------------------------------------------------


def test_range_and_months_keep_the_dates_inside(tmp_path):
    texts = ["20240315", "20240501", "20240615", "20240720", "20240905"]
    write_places(tmp_path, {"p": texts}, files=("x",))
    isos = [iso(t) for t in texts]
    for series, keep in [
        ({"range": ["2024-05-01", "2024-07-20"]}, [d for d in isos if "2024-05-01" <= d <= "2024-07-20"]),
        ({"months": [6, 7, 8]}, [d for d in isos if int(d[5:7]) in (6, 7, 8)]),
        ({"range": ["2024-04-01", "2024-12-31"], "months": [3, 9]}, ["2024-09-05"]),
    ]:
        cfg = data_cfg(tmp_path, "p_{date}_x.tif", "labels/p.tif", series=series)
        (scene,) = load_scenes(cfg, "train", progress=False)
        assert [d.date for d in scene.dates] == keep, series
    cfg = data_cfg(tmp_path, "p_{date}_x.tif", "labels/p.tif", series={"months": [1, 2]})
    assert "data.series.range/months" in one_line_error(load_scenes, cfg, "train", False)


def write_holes(root: Path, cloudy: list[np.ndarray]) -> None:
    """One place whose date k holds k + 1 where clear and nodata 0 where ``cloudy[k]``."""
    (root / "labels").mkdir(parents=True, exist_ok=True)
    write_tif(root / "labels" / "p.tif", label_array())
    for k, bad in enumerate(cloudy):
        band = np.where(bad, 0, k + 1).astype(np.float32)
        write_tif(root / f"p_2024060{k + 1}.tif", band, ORIGIN, nodata=0)


def dates_in(image: np.ndarray) -> list[int]:
    """Which date each slot of a :func:`write_holes` chip holds (from its clear pixels)."""
    out = []
    for slot in image:
        values = np.unique(slot[0][slot[1] == 1])
        assert len(values) == 1, values
        out.append(int(values[0]) - 1)
    return out


def test_clearest_picks_the_clearest_dates_of_each_chip_in_time_order(tmp_path):
    fractions = {(0, 0): [1.0, 0.0, 0.5, 0.25], (0, 32): [0.0, 0.5, 0.25, 0.75]}  # per chip, per date
    cloudy = [np.zeros((H, W), bool) for _ in range(4)]
    for (row, col), fracs in fractions.items():
        for k, f in enumerate(fracs):
            cloudy[k][row : row + int(32 * f), col : col + 32] = True
    cloudy[0][0, 0] = False  # no date is fully cloudy (a slot with no clear pixel cannot be told apart)
    write_holes(tmp_path, cloudy)
    cfg = data_cfg(tmp_path, "p_{date}.tif", series={"select": "clearest", "count": 2}, chip_size=32)
    scenes = load_scenes(cfg, "train", progress=False)
    read = series_read(cfg, scenes, training=True)
    assert (read.dates, read.select) == (2, "clearest")
    for (row, col), fracs in fractions.items():
        image, _ = chip_of(scenes, read, [1.0], row, col, size=32)
        assert dates_in(image) == sorted(np.argsort(fracs, kind="stable")[:2].tolist())
        for slot, k in enumerate(dates_in(image)):
            np.testing.assert_array_equal(image[slot, 1], ~cloudy[k][row : row + 32, col : col + 32])


def test_even_and_random_picks(tmp_path):
    assert SeriesRead(3, "even").pick(np.ones(5), None) == [0, 2, 4]
    assert SeriesRead(2, "even").pick(np.ones(6), None) == [0, 5]
    assert SeriesRead(6, "even").pick(np.ones(4), None) == [0, 1, 2, 3]  # fewer dates: all (then padding)
    assert SeriesRead(3, "all").pick(np.ones(5), None) == [0, 2, 4]  # a series longer than the model: thinned
    rand = SeriesRead(3, "random")
    picks = [tuple(rand.pick(np.ones(8), seed)) for seed in range(40)]
    assert all(list(p) == sorted(set(p)) and len(p) == 3 and max(p) < 8 for p in picks)
    assert [tuple(rand.pick(np.ones(8), seed)) for seed in range(40)] == picks  # the chip's seed decides
    assert len(set(picks)) > 5
    evaluation = SeriesRead(3, "random", training=False)
    even = SeriesRead(3, "even").pick(np.ones(8), None)
    assert all(evaluation.pick(np.ones(8), seed) == even for seed in range(10))
    # through the dataset: the same chip seed reads the same dates, another seed other dates
    write_holes(tmp_path, [np.zeros((H, W), bool)] * 6)
    cfg = data_cfg(tmp_path, "p_{date}.tif", series={"select": "random", "count": 2}, chip_size=32)
    scenes = load_scenes(cfg, "train", progress=False)
    read = series_read(cfg, scenes, training=True)
    by_seed = {s: dates_in(chip_of(scenes, read, [1.0], size=32, seed=s)[0]) for s in range(12)}
    assert by_seed[3] == dates_in(chip_of(scenes, read, [1.0], size=32, seed=3)[0])
    assert len({tuple(v) for v in by_seed.values()}) > 2
    split = build_split(cfg, "val", train_stats(cfg, progress=False, scenes=scenes), None, 0, scenes=scenes,
                        series=read)  # fmt: skip
    batch = next(iter(split.loader))["image"].numpy()
    assert dates_in(batch[0].reshape(2, 2, 32, 32)) == [0, 5]  # outside training: even


# --- 5. one geometric transform for every date --------------------------------------------------------


def flip_scene(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Three dates whose band is the pixel's number plus 10000 * date; a nodata block on date 1 only."""
    number = np.arange(H * W, dtype=np.float32).reshape(H, W) + 1
    hole = np.zeros((H, W), bool)
    hole[3:9, 40:60] = True
    (root / "labels").mkdir(parents=True, exist_ok=True)
    write_tif(root / "labels" / "p.tif", ((number.astype(int) // 7) % 4).astype(np.uint8))
    for k in range(3):
        band = number + 10000 * k
        if k == 1:
            band[hole] = -1
        write_tif(root / f"p_2024060{k + 1}.tif", band, ORIGIN, nodata=-1)
    return number, hole


@pytest.mark.parametrize("aug", ["flips", "affine"])
def test_every_date_gets_the_mask_s_geometric_transform(tmp_path, aug):
    number, hole = flip_scene(tmp_path)
    cfg = data_cfg(tmp_path, "p_{date}.tif")
    scenes = load_scenes(cfg, "train", progress=False)
    if aug == "flips":
        augment = build_augment(compose_config("train", "aug=flips").aug)
        assert augment.dihedral
    else:  # the albumentations path: (H, W, T*(C+1)) through cv2, a shift whose edge falls outside
        shift = A.Affine(translate_px={"x": 5, "y": 3}, interpolation=0, mask_interpolation=0, p=1)
        augment = Augment(A.Compose([A.HorizontalFlip(p=1), shift]))
        assert not augment.dihedral
    moved = 0
    fill = [float(number.mean())]
    for seed in range(6):
        image, mask = chip_of(scenes, SeriesRead(3), fill, seed=seed, augment=augment)
        clear = image[0, 1] == 1
        assert clear.any()
        where = np.rint(image[0, 0] - 1).astype(int)  # which source pixel each output pixel shows
        moved += not np.array_equal(where[clear], np.arange(H * W).reshape(H, W)[clear])
        src_rows, src_cols = np.divmod(where, W)
        for k in range(3):
            ok = image[k, 1] == 1
            assert (ok == clear & ~(hole[src_rows, src_cols] if k == 1 else False)).all()  # same place
            np.testing.assert_array_equal(image[k, 0][ok], number.ravel()[where[ok]] + 10000 * k)
        np.testing.assert_array_equal(mask[clear], ((where[clear] + 1) // 7) % 4)
        assert (mask[~clear] == IGNORE).all()
    assert moved  # some seed did transform the chip


# --- 6. train and predict end to end -------------------------------------------------------------------


def write_series_folder(folder: Path, seed: int, texts=("20240601", "20240701", "20240801")) -> None:
    """A 4-band uint16 place of three dates under ``folder`` (``scene_<date>.tif``) and its label."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    write_tif(folder / "labels" / "scene.tif", label_array(seed))
    for text in texts:
        bands = rng.integers(1, 3000, size=(4, H, W)).astype(np.uint16)
        write_tif(folder / f"scene_{text}.tif", bands, ORIGIN)


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    from geoseg.engine.fit import fit

    root = tmp_path_factory.mktemp("series")
    write_series_folder(root / "train", 0)
    write_series_folder(root / "val", 1)
    run = root / "run"
    cfg = compose_config("train", *tiny_run(
        root, "temporal=early", "trainer.max_steps=2", "data.val_stride=32", f"data.cache_dir={root}/cache",
        "data.splits.train.images='train/scene_{date}.tif'",
        "data.splits.train.labels='train/labels/{scene}.tif'",
        "data.splits.val.images='val/scene_{date}.tif'",
        "data.splits.val.labels='val/labels/{scene}.tif'",
    ))  # fmt: skip
    summary = fit(cfg, str(run))
    assert summary["steps"] == 2
    return root, run / "best.pt"


def test_train_on_a_series_then_predict_a_date_pattern(series_run, tmp_path, capsys, monkeypatch,
                                                       release_hydra_logging):  # fmt: skip
    from geoseg.cli import main
    from geoseg.engine.checkpoint import load_checkpoint

    _, best = series_run
    ckpt = load_checkpoint(best)
    assert ckpt["meta"]["series"]["dates"] == 3 and ckpt["meta"]["bands_per_date"] == 4
    assert ckpt["meta"]["in_channels"] == 3 * (4 + 1)  # each date's bands and its validity
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv)
    scenes = tmp_path / "in"
    write_series_folder(scenes, 5, texts=("2024-06-03", "2024-07-09", "2024-08-02"))
    pattern = f"input='{scenes}/scene_{{date}}.tif'"
    main(["predict", f"checkpoint={best}", pattern, f"output={tmp_path}/pred.tif", "device=cpu", "tile=32",
          "overlap=8"])  # fmt: skip
    capsys.readouterr()
    with rasterio.open(tmp_path / "pred.tif") as pred, rasterio.open(scenes / "scene_2024-06-03.tif") as src:
        assert (pred.width, pred.height, pred.count) == (src.width, src.height, 1)
        assert pred.transform == src.transform and pred.crs == src.crs == UTM
        classes = pred.read(1)
    assert set(np.unique(classes)) <= {0, 1, 2, 3}
    # a single date for a series checkpoint, a series pattern for a single-date one: one line each
    line = run_error(capsys, "predict", f"checkpoint={best}", f"input={scenes}/scene_2024-06-03.tif",
                     f"output={tmp_path}/one.tif", "device=cpu")  # fmt: skip
    assert "series of dates" in line and "{date}" in line
    single = save_tiny_checkpoint(tmp_path / "single.pt", scenes / "scene_2024-06-03.tif", classes=4)
    line = run_error(capsys, "predict", f"checkpoint={single}", pattern, f"output={tmp_path}/two.tif",
                     "device=cpu")  # fmt: skip
    assert "{date}" in line and "one date" in line


def test_a_groupnorm_series_model_predicts_with_scene_statistics(tmp_path, monkeypatch, capsys,
                                                                  release_hydra_logging):  # fmt: skip
    """norm_stats=auto on a series model: the calibration windows are read as its tiles are (dates x
    (bands + validity))."""
    from geoseg.cli import main
    from geoseg.engine.fit import fit

    write_series_folder(tmp_path / "train", 0)
    write_series_folder(tmp_path / "val", 1)
    cfg = compose_config("train", *tiny_run(
        tmp_path, "temporal=early", "norm=groupnorm", "trainer.max_steps=1", "data.val_stride=32",
        f"data.cache_dir={tmp_path}/cache", "data.splits.train.images='train/scene_{date}.tif'",
        "data.splits.train.labels='train/labels/{scene}.tif'",
        "data.splits.val.images='val/scene_{date}.tif'", "data.splits.val.labels='val/labels/{scene}.tif'",
    ))  # fmt: skip
    fit(cfg, str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", sys.argv)
    pattern = f"input='{tmp_path}/val/scene_{{date}}.tif'"
    main(["predict", f"checkpoint={tmp_path}/run/best.pt", pattern, f"output={tmp_path}/pred.tif",
          "device=cpu", "tile=32", "overlap=8"])  # fmt: skip
    capsys.readouterr()
    with rasterio.open(tmp_path / "pred.tif") as pred:
        assert pred.tags()["geoseg_norm_stats"] == "scene"
        assert set(np.unique(pred.read(1))) <= {0, 1, 2, 3}


# --- 7. the shared eo-learn example as one series ----------------------------------------------------------

SLOVENIA = SHARED_DATA / "eolearn_s2_slovenia"


@pytest.mark.skipif(not (SLOVENIA / "s2_scene_4.tif").exists(), reason="shared eo-learn data not present")
def test_the_eolearn_patch_is_one_series_of_five_dates(tmp_path):
    cfg = compose_config("train", "data=eolearn_slovenia_series", f"data.root={SLOVENIA}",
                         f"data.cache_dir={tmp_path}", f"data.stats_path={tmp_path}/stats.json",
                         "data.num_workers=0", "data.batch_size=2", "data.chip_size=32")  # fmt: skip
    cfg = as_dict(cfg.data)
    scenes = {split: load_scenes(cfg, split, progress=False) for split in ("train", "val")}
    for split, found in scenes.items():
        assert len(found) == 1 and len(found[0].dates) == 5, split
        assert [d.text for d in found[0].dates] == ["0", "1", "2", "3", "4"]
        assert found[0].label.endswith("lulc_label.tif")
    stats = train_stats(cfg, progress=False, scenes=scenes["train"])
    assert len(stats.bands) == 13
    read = series_read(cfg, scenes["train"], training=True)
    split = build_split(cfg, "val", stats, None, 0, scenes=scenes["val"], series=read)
    batch = next(iter(split.loader))
    assert tuple(batch["image"].shape[1:]) == (5 * 14, 32, 32)
    validity = batch["image"].reshape(-1, 5, 14, 32, 32)[:, :, 13]
    assert set(np.unique(validity.numpy())) <= {0.0, 1.0}


def test_geoseg_stats_on_a_series_counts_every_clear_date_as_training_does(tmp_path):
    """``geoseg stats`` reads every date of a series and leaves masked pixels out, as training does."""
    from geoseg.commands.stats import run as stats_run

    texts = ["20240601", "20240611", "20240621"]
    bands, invalid = write_cloudy(
        tmp_path, texts, [3, 8, 9], [scl_codes(k) for k in range(3)], name="p_{t}_{f}.tif"
    )
    overrides = [f"data.root={tmp_path}", f"data.cache_dir={tmp_path}/cache", "data.files=[B08]",
                 "data.splits.train.images='p_{date}_{file}.tif'", "data.splits.train.labels=null",
                 "data.series.mask.file=SCL", "data.series.mask.invalid=[3,8,9]", "progress=false",
                 f"output={tmp_path}/stats.json"]  # fmt: skip
    stats = stats_run(compose_config("stats", *overrides))
    clear = np.concatenate([bands[k][~invalid[k]] for k in range(3)]).astype(np.float64)
    assert stats.count == clear.size
    np.testing.assert_allclose(stats.mean, [clear.mean()], rtol=1e-6)
