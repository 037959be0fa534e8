"""Integration tests on the real scenes in ``../shared/data`` (see its README.md).

Every scene goes through :func:`inspect_scene`, :func:`compute_stats` (checked against numpy over a
full read) and :class:`ChipDataset` (checked chip by chip against the full read). The shipped data
configs for two of the datasets are composed with Hydra and loaded. The whole module is skipped when
the shared data folder is not beside the repo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from conftest import SHARED_DATA, compose_config
from geoseg.config import as_dict
from geoseg.data.build import build_split, load_scenes, train_stats
from geoseg.data.data_options import stats_path
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.normalize import batch_dtype
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.data.stats import compute_stats, load_stats
from geoseg.data.windows import Chip, grid_windows
from geoseg.models.band_normalize import BandNormalize

REPO_ROOT = Path(__file__).resolve().parents[1]
IGNORE = 255
MAX_CHIPS = 6  # grid chips read per scene (all of them when the grid is this small or smaller)

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not SHARED_DATA.is_dir(),
        reason=f"{SHARED_DATA} (../shared/data) not found: the real-data integration tests need the "
        "shared data folder beside the repo",
    ),
]


@dataclass(frozen=True)
class Case:
    """One real scene and the options it needs (the README says which)."""

    id: str
    image: str
    label: str | None = None
    codes: tuple[int, ...] = ()
    nodata: float | None = None
    label_nodata: float | None = None
    chip_size: int = 256


EOLEARN_CODES = (1, 2, 3, 4, 8)
CASES = [
    Case(
        "sen1floods11-s2",
        "sen1floods11/Spain_7370579_S2Hand.tif",
        "sen1floods11/Spain_7370579_LabelHand.tif",
        codes=(0, 1),
        label_nodata=-1,  # the label file declares no nodata
    ),
    Case("sen1floods11-s1", "sen1floods11/Spain_7370579_S1Hand.tif"),  # float32, declared nodata NaN
    Case(
        "spacenet",
        "spacenet_buildings/sample_geotiff.tif",
        "spacenet_buildings/buildings_label.tif",
        codes=(0, 1),  # label declares no nodata; image nodata 0
    ),
    Case("naip", "naip_scene/m_4709963_se_14_1_20200831.tif"),
    *[
        Case(
            f"eolearn-{i}",
            f"eolearn_s2_slovenia/s2_scene_{i}.tif",
            "eolearn_s2_slovenia/lulc_label.tif",
            codes=EOLEARN_CODES,
            label_nodata=0,  # code 0 is "no data" in the label
            chip_size=64,  # the scenes are 100x101 px
        )
        for i in range(5)
    ],
    # the zero collar is not declared as nodata in the file
    Case("landsat8", "landsat8_scene/LC08_L1TP_224078_20200518_20200518_01_RT.TIF", nodata=0),
]


@dataclass
class Loaded:
    """A case's scene and an independent full read of it."""

    case: Case
    scene: Scene
    image: np.ndarray  # (C, H, W) raw bands
    valid: np.ndarray  # (H, W) bool, computed here without geoseg
    label: np.ndarray | None  # (H, W) raw label


def expected_valid(arr: np.ndarray, nodata: float | None) -> np.ndarray:
    """Valid = finite in every band and not nodata in every band (numpy only, independent of geoseg)."""
    valid = np.isfinite(arr.astype(np.float64)).all(axis=0)
    if nodata is not None and not math.isnan(nodata):
        valid &= (arr != nodata).any(axis=0)
    return valid


def expected_mask(label: np.ndarray, codes: tuple[int, ...], valid: np.ndarray) -> np.ndarray:
    """Class index by list order of ``codes``, IGNORE for any other value and for invalid image pixels."""
    out = np.full(label.shape, IGNORE, dtype=np.int64)
    for index, code in enumerate(codes):
        out[label == code] = index
    out[~valid] = IGNORE
    return out


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def loaded(request) -> Loaded:
    case: Case = request.param
    image = str(SHARED_DATA / case.image)
    label = None if case.label is None else str(SHARED_DATA / case.label)
    scene = inspect_scene(
        image,
        label,
        nodata=case.nodata,
        label_nodata=case.label_nodata,
        class_codes=case.codes,
        chip_size=case.chip_size,
    )
    with rasterio.open(image) as src:
        arr = src.read()
    lab = None
    if label is not None:
        with rasterio.open(label) as src:
            lab = src.read(1)
    return Loaded(case, scene, arr, expected_valid(arr, scene.nodata), lab)


def test_scene_is_inspected(loaded: Loaded) -> None:
    case, scene = loaded.case, loaded.scene
    assert scene.bands == tuple(range(1, loaded.image.shape[0] + 1))
    assert (scene.height, scene.width) == loaded.image.shape[1:]
    if case.nodata is not None:
        assert scene.nodata == case.nodata
    if case.label is None:
        assert scene.label is None
    else:
        assert scene.label_nodata == case.label_nodata
        # every labelled scene here is written on its image grid: no reprojection per chip
        assert scene.label_on_grid
        assert loaded.label.shape == loaded.image.shape[1:]


def test_stats_match_numpy(loaded: Loaded) -> None:
    stats = compute_stats([loaded.scene], progress=False)
    values = loaded.image[:, loaded.valid].astype(np.float64)
    assert stats.count == values.shape[1] > 0
    assert stats.bands == list(loaded.scene.bands)
    assert stats.mean == pytest.approx(values.mean(axis=1).tolist(), rel=1e-6)
    assert stats.std == pytest.approx(values.std(axis=1).tolist(), rel=1e-6)
    assert stats.min == pytest.approx(values.min(axis=1).tolist())
    assert stats.max == pytest.approx(values.max(axis=1).tolist())
    bounds = zip(stats.min, stats.p2, stats.p98, stats.max, strict=True)
    assert all(lo <= p2 <= p98 <= hi for lo, p2, p98, hi in bounds)
    assert stats.scenes == [loaded.scene.image]


def pick_windows(scene: Scene, size: int) -> list[tuple[int, int]]:
    windows = grid_windows(scene.height, scene.width, size)
    if len(windows) <= MAX_CHIPS:
        return windows
    # the first and last (clamped) chips and a few between them
    idx = np.unique(np.linspace(0, len(windows) - 1, MAX_CHIPS).round().astype(int))
    return [windows[i] for i in idx]


def test_chips_match_full_read(loaded: Loaded) -> None:
    case, scene = loaded.case, loaded.scene
    size = case.chip_size
    stats = compute_stats([scene], progress=False)
    codes = case.codes
    ds = ChipDataset([scene], size, ClassMap(codes, ignore_index=IGNORE), fill=stats.mean)
    normalize = BandNormalize(stats.mean, stats.std)
    mean = np.asarray(stats.mean)[:, None, None]
    std = np.asarray(stats.std)[:, None, None]
    try:
        for row, col in pick_windows(scene, size):
            item = ds[Chip(0, row, col)]
            raw_chip, mask = item["image"], item["mask"]
            assert str(raw_chip.dtype) == f"torch.{batch_dtype([scene.dtype])}" and mask.dtype == torch.uint8
            assert raw_chip.shape == (len(scene.bands), size, size) and mask.shape == (size, size)
            assert item["chip"].tolist() == [0, row, col]
            image, mask = normalize(raw_chip).numpy(), mask.numpy()
            assert np.isfinite(image).all()

            win = np.s_[row : row + size, col : col + size]
            valid = loaded.valid[win]
            raw = loaded.image[(slice(None), *win)].astype(np.float64)
            # nodata (and non-finite) image pixels are ignored in the mask and hold the band mean,
            # rounded to the raw dtype, so they normalise to within half a raw unit of zero
            assert (mask[~valid] == IGNORE).all()
            assert (np.abs(image[:, ~valid]) <= (0.5 / std + 1e-6)[:, :, 0]).all()
            np.testing.assert_allclose(image[:, valid], ((raw - mean) / std)[:, valid], rtol=1e-4, atol=1e-4)
            if loaded.label is None:
                assert (mask == IGNORE).all()
            else:
                np.testing.assert_array_equal(mask, expected_mask(loaded.label[win], codes, valid))
    finally:
        ds.close()


def read_all_chips(scene: Scene, size: int, codes: tuple[int, ...]) -> np.ndarray:
    """The whole scene's mask assembled from grid chips (later chips overwrite overlaps)."""
    ds = ChipDataset([scene], size, ClassMap(codes, ignore_index=IGNORE), fill=[0.0] * len(scene.bands))
    out = np.full((scene.height, scene.width), -1, dtype=np.int64)
    try:
        for row, col in grid_windows(scene.height, scene.width, size):
            out[row : row + size, col : col + size] = ds[Chip(0, row, col)]["mask"].numpy()
    finally:
        ds.close()
    assert (out >= 0).all()  # the grid covers the scene
    return out


def sen1floods11_scene(size: int = 256) -> Scene:
    return inspect_scene(
        str(SHARED_DATA / "sen1floods11/Spain_7370579_S2Hand.tif"),
        str(SHARED_DATA / "sen1floods11/Spain_7370579_LabelHand.tif"),
        label_nodata=-1,
        class_codes=(0, 1),
        chip_size=size,
    )


def test_sen1floods11_water_fraction_through_chips() -> None:
    scene = sen1floods11_scene()
    mask = read_all_chips(scene, 256, (0, 1))
    with rasterio.open(scene.label) as src:
        label = src.read(1)
    dry, water = int((mask == 0).sum()), int((mask == 1).sum())
    # README: 0 = not water (192,010 px), 1 = water (70,035 px), -1 = no data (99 px)
    assert dry == pytest.approx(192_010, rel=0.01)
    assert water == pytest.approx(70_035, rel=0.01)
    assert water / (water + dry) == pytest.approx(70_035 / (70_035 + 192_010), abs=0.005)
    assert (label == -1).sum() == 99
    assert (mask[label == -1] == IGNORE).all()
    assert set(np.unique(mask).tolist()) == {0, 1, IGNORE}


def test_eolearn_codes_with_gaps_map_to_contiguous_indices() -> None:
    root = SHARED_DATA / "eolearn_s2_slovenia"
    scene = inspect_scene(
        str(root / "s2_scene_1.tif"),
        str(root / "lulc_label.tif"),
        label_nodata=0,
        class_codes=EOLEARN_CODES,
        chip_size=64,
    )
    mask = read_all_chips(scene, 64, EOLEARN_CODES)
    # README: 0 no data (155), 1 cultivated (11), 2 forest (7,601), 3 grassland (1,777), 4 shrubland (358),
    # 8 artificial surface (198); the scenes are float32 with no nodata, so only label nodata is ignored
    counts = {int(k): int(v) for k, v in zip(*np.unique(mask, return_counts=True), strict=True)}
    assert counts == {0: 11, 1: 7_601, 2: 1_777, 3: 358, 4: 198, IGNORE: 155}


def test_landsat8_zero_collar_is_nodata() -> None:
    scene = inspect_scene(
        str(SHARED_DATA / "landsat8_scene/LC08_L1TP_224078_20200518_20200518_01_RT.TIF"), None, nodata=0
    )
    stats = compute_stats([scene], progress=False)
    # README: about 16.5% of the pixels are a zero collar
    assert 1 - stats.count / (scene.height * scene.width) == pytest.approx(0.165, abs=0.01)
    assert min(stats.min) > 0


def sen1floods11_cfg(tmp_path: Path) -> dict:
    """A dict data config modelled on configs/data/demo.yaml for the sen1floods11 S2 chip."""
    return {
        "root": str(SHARED_DATA),
        "demo": None,
        "manifest": None,
        "splits": {
            split: {
                "images": "sen1floods11/*_S2Hand.tif",
                # {stem} is "Spain_7370579_S2Hand", the label is "..._LabelHand": one scene, one fixed label
                "labels": "sen1floods11/Spain_7370579_LabelHand.tif",
            }
            for split in ("train", "val")
        },
        "bands": None,
        "nodata": None,
        "label_nodata": -1,
        "unknown_labels": "error",
        "ignore_index": IGNORE,
        "classes": [{"code": 0, "name": "dry"}, {"code": 1, "name": "water"}],
        "chip_size": 256,
        "val_stride": None,
        "max_nodata_fraction": 0.5,
        "chips_per_epoch": 4,
        "stats_path": str(tmp_path / "stats" / "sen1floods11.json"),
        "batch_size": 2,
        "num_workers": 0,
        "pin_memory": False,
        "prefetch_factor": 2,
        "persistent_workers": False,
        "max_open_files": 8,
    }


def test_build_split_sen1floods11(tmp_path: Path) -> None:
    cfg = sen1floods11_cfg(tmp_path)
    scenes = load_scenes(cfg, "train")
    assert [Path(s.image).name for s in scenes] == ["Spain_7370579_S2Hand.tif"]
    assert Path(scenes[0].label).name == "Spain_7370579_LabelHand.tif"
    assert scenes[0].label_nodata == -1

    stats = train_stats(cfg, progress=False)
    assert Path(stats_path(cfg, stats.key)).is_file()
    assert load_stats(stats_path(cfg, stats.key)) == stats
    assert stats.count == 512 * 512 and len(stats.mean) == 13

    train = build_split(cfg, "train", stats, augment=None, seed=0)
    assert len(train.sampler) == 4
    batch = next(iter(train.loader))
    assert batch["image"].shape == (2, 13, 256, 256) and batch["image"].dtype == torch.int16
    assert batch["mask"].shape == (2, 256, 256) and batch["mask"].dtype == torch.uint8
    assert torch.isfinite(BandNormalize(stats.mean, stats.std)(batch["image"])).all()
    assert set(batch["mask"].unique().tolist()) <= {0, 1, IGNORE}
    assert (batch["mask"] == 1).any()  # about 27% water: two 256 px chips can't miss it all
    train.dataset.close()

    val = build_split(cfg, "val", stats, augment=None, seed=0)
    assert len(val.sampler) == 4  # a 2x2 grid of 256 px chips over 512x512
    val.dataset.close()


@pytest.mark.parametrize(
    ("name", "n_scenes", "n_bands", "chip_size"),
    [("sen1floods11", 1, 13, 128), ("eolearn_slovenia", 5, 13, 32)],
)
def test_data_config_composes_and_loads(
    name: str, n_scenes: int, n_bands: int, chip_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)  # data.root is relative to the repo root
    cfg = compose_config("stats", f"data={name}")
    data = as_dict(cfg.data)
    assert data["demo"] is None
    assert data["chip_size"] == chip_size
    assert Path(stats_path(data, "k")).is_relative_to(REPO_ROOT / "outputs")  # git-ignored
    for split in ("train", "val"):
        scenes = load_scenes(data, split)
        assert len(scenes) == n_scenes
        for scene in scenes:
            assert Path(scene.image).resolve().is_relative_to(SHARED_DATA.resolve())
            assert scene.label is not None and scene.label_on_grid
            assert len(scene.bands) == n_bands
            assert scene.label_nodata == data["label_nodata"]
    # the splits are spatial: train and val regions of the same scene never overlap
    train, val = load_scenes(data, "train")[0], load_scenes(data, "val")[0]
    assert train.image == val.image and train.bounds[3] <= val.bounds[1]
    assert val.bounds[3] == val.width and train.bounds[1] == 0
