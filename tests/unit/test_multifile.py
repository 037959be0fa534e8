"""Scenes whose bands come from several files (data.files, data.grid, data.invalid), on tiny GeoTIFFs."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from conftest import UTM, write_tif
from geoseg.data.band_files import parse_files
from geoseg.data.build import load_scenes
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.scene_paths import expand_pattern, find_scene_files, read_manifest, scene_name
from geoseg.data.scenes import inspect_scene
from geoseg.data.stats import compute_stats
from geoseg.data.windows import Chip
from geoseg.errors import GeosegError

ORIGIN = from_origin(500_000, 5_000_000, 10, 10)
H, W = 48, 64


def _landsat(tmp_path: Path, prefix: str = "LC08_X_SR_") -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Three single-band files: uint8 (nodata 0), int16 (nodata -32768), float32 (nodata -99999)."""
    rng = np.random.default_rng(1)
    a = rng.integers(1, 250, size=(H, W)).astype(np.uint8)
    b = rng.integers(-2000, 9000, size=(H, W)).astype(np.int16)
    c = rng.normal(0.2, 0.05, size=(H, W)).astype(np.float32)
    a[:4, :] = 0
    b[10:14, 20:40] = -32768
    c[30:, 50:] = -99999
    c[40, 5] = np.nan
    paths = [
        write_tif(tmp_path / f"{prefix}B1.TIF", a, ORIGIN, nodata=0, tiled=True),
        write_tif(tmp_path / f"{prefix}B2.TIF", b, ORIGIN, nodata=-32768, tiled=True),
        write_tif(tmp_path / f"{prefix}B3.TIF", c, ORIGIN, nodata=-99999, tiled=True),
    ]
    stack = np.stack([a.astype(np.float32), b.astype(np.float32), c])
    invalid = (a == 0) | (b == -32768) | (c == -99999) | np.isnan(c)
    return paths, stack, invalid


FILES = parse_files(["B1", "B2", "B3"])


def _scene(paths, **kw):
    return inspect_scene([str(p) for p in paths], None, files=kw.pop("files", FILES), **kw)


def _chip(scene, row, col, size=16, fill=(7.0, 7.0, 7.0)):
    ds = ChipDataset([scene], size, ClassMap([0, 1]), fill=list(fill))
    return ds[Chip(0, row, col)]["image"].numpy()


def test_three_dtypes_stack_like_numpy_with_the_any_file_nodata_rule(tmp_path):
    paths, stack, invalid = _landsat(tmp_path)
    scene = _scene(paths)
    assert scene.dtype == "float32" and scene.bands == (1, 2, 3) and scene.band_names == ("B1", "B2", "B3")
    assert scene.band_nodata == (0.0, -32768.0, -99999.0)
    for row, col in [(0, 0), (8, 16), (32, 48), (30, 0)]:
        got = _chip(scene, row, col)
        sl = np.s_[row : row + 16, col : col + 16]
        expected = np.where(invalid[sl], np.float32(7.0), stack[(slice(None), *sl)])
        np.testing.assert_array_equal(got, expected)


def test_stack_dtype_is_the_smallest_that_holds_every_file(tmp_path):
    a = write_tif(tmp_path / "s_a.tif", np.ones((H, W), np.uint8), ORIGIN)
    b = write_tif(tmp_path / "s_b.tif", np.full((H, W), 700, np.uint16), ORIGIN)
    c = write_tif(tmp_path / "s_c.tif", np.full((H, W), -5, np.int16), ORIGIN)
    files = parse_files(["a", "b"])
    assert inspect_scene([str(a), str(b)], None, files=files).dtype == "uint16"
    assert inspect_scene([str(c), str(b)], None, files=files).dtype == "int32"


def test_a_20m_file_on_a_10m_grid_equals_reproject_of_that_window(tmp_path):
    rng = np.random.default_rng(2)
    fine = write_tif(tmp_path / "t_B02.tif", rng.integers(1, 9000, (H, W)).astype(np.float32), ORIGIN)
    coarse_data = rng.normal(100, 20, (H // 2, W // 2)).astype(np.float32)
    coarse = write_tif(tmp_path / "t_B05.tif", coarse_data, from_origin(500_000, 5_000_000, 20, 20))
    scene = inspect_scene([str(fine), str(coarse)], None, files=parse_files(["B02", "B05"]))
    assert scene.grid.transform[0] == 10 and (scene.height, scene.width) == (H, W)  # finest grid
    assert scene.files[0].on_grid and not scene.files[1].on_grid
    for row, col in [(0, 0), (16, 24), (30, 46)]:
        window = Window(col, row, 16, 16)
        expected = np.zeros((16, 16), np.float32)
        with rasterio.open(coarse) as src:
            reproject(rasterio.band(src, 1), expected, dst_transform=window_transform(window, ORIGIN),
                      dst_crs=UTM, resampling=Resampling.bilinear)  # fmt: skip
        got = _chip(scene, row, col, fill=(0.0, 0.0))
        np.testing.assert_array_equal(got[1], expected)


def test_first_grid_and_a_named_grid(tmp_path):
    fine = write_tif(tmp_path / "g_B02.tif", np.ones((H, W), np.uint16), ORIGIN)
    coarse = write_tif(tmp_path / "g_B05.tif", np.ones((H // 2, W // 2), np.uint16),
                       from_origin(500_000, 5_000_000, 20, 20))  # fmt: skip
    files = parse_files(["B05", "B02"])
    assert inspect_scene([str(coarse), str(fine)], None, files=files).grid.transform[0] == 10
    assert inspect_scene([str(coarse), str(fine)], None, files=files, grid="first").width == W // 2
    assert inspect_scene([str(coarse), str(fine)], None, files=files, grid="B05").width == W // 2


def test_same_crs_offset_file_lands_on_the_right_pixels(tmp_path):
    rng = np.random.default_rng(3)
    ref = rng.integers(1, 100, (H, W)).astype(np.uint16)
    big = rng.integers(1, 100, (H + 10, W + 10)).astype(np.uint16)
    a = write_tif(tmp_path / "o_a.tif", ref, ORIGIN)
    # one pixel = 10 m: this file starts 4 px left of and 6 px above the reference grid
    b = write_tif(tmp_path / "o_b.tif", big, from_origin(500_000 - 40, 5_000_000 + 60, 10, 10))
    files = parse_files(["a", {"name": "b", "resampling": "nearest"}])
    scene = inspect_scene([str(a), str(b)], None, files=files, grid="first")
    got = _chip(scene, 5, 7, fill=(0.0, 0.0))
    np.testing.assert_array_equal(got[1], big[6 + 5 : 6 + 5 + 16, 4 + 7 : 4 + 7 + 16])


def test_a_file_in_another_crs_lands_on_the_right_pixels(tmp_path):
    """A nearest-resampled copy of the reference in Web Mercator reads back onto the reference grid."""
    img = np.zeros((H, W), np.uint8)
    img[::8, :] = 1  # a pattern of 8-px cells with a marker block at a known place
    img[20:28, 40:48] = 9
    a = write_tif(tmp_path / "c_a.tif", img + 10, ORIGIN)
    dst_crs = CRS.from_epsg(3857)
    bounds = rasterio.transform.array_bounds(H, W, ORIGIN)
    transform, width, height = calculate_default_transform(UTM, dst_crs, W, H, *bounds, resolution=4.0)
    merc = np.zeros((height, width), np.uint8)
    reproject(img, merc, src_transform=ORIGIN, src_crs=UTM, dst_transform=transform, dst_crs=dst_crs,
              resampling=Resampling.nearest)  # fmt: skip
    b = write_tif(tmp_path / "c_b.tif", merc, transform, crs=dst_crs)
    files = parse_files(["a", {"name": "b", "resampling": "nearest"}])
    scene = inspect_scene([str(a), str(b)], None, files=files, grid="a")
    back = ChipDataset([scene], H, ClassMap([0]), fill=[0.0, 0.0])[Chip(0, 0, 0)]["image"].numpy()[1]
    assert (back == img[:, :H])[2:-2, 2:-2].mean() > 0.97  # the chip is the left 48x48 px
    assert (back[21:27, 41:47] == 9).all() and (back[:16, :16] != 9).all()


def test_missing_file_of_a_scene_is_one_line_naming_it(tmp_path):
    paths, _, _ = _landsat(tmp_path)
    paths[1].unlink()
    with pytest.raises(
        GeosegError, match=r"scene 'LC08_X_SR' has no file '.*LC08_X_SR_B2.TIF' for data.files 'B2'"
    ):
        expand_pattern(str(tmp_path / "LC08_*_SR_{file}.TIF"), FILES, "data.splits.train.images")


def test_grid_first_with_a_file_that_does_not_overlap_names_it(tmp_path):
    a = write_tif(tmp_path / "n_a.tif", np.ones((H, W), np.uint16), ORIGIN)
    far = write_tif(
        tmp_path / "n_b.tif", np.ones((20, 20), np.uint16), from_origin(900_000, 5_000_000, 10, 10)
    )
    message = r"file '.*n_b.tif' does not overlap the reference grid of '.*n_a.tif' \(data.grid=first\)"
    with pytest.raises(GeosegError, match=message) as err:
        inspect_scene([str(a), str(far)], None, files=parse_files(["a", "b"]), grid="first")
    assert "\n" not in str(err.value)


def test_bands_out_of_range_in_a_files_entry_names_the_file(tmp_path):
    paths, _, _ = _landsat(tmp_path)
    files = parse_files(["B1", {"name": "B2", "bands": [1, 2]}, "B3"])
    with pytest.raises(GeosegError, match=r"data.files\[1\] \(B2\): band 2 is out of range for '.*B2.TIF', "
                       "which has 1 band"):  # fmt: skip
        _scene(paths, files=files)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("B2", "data.files must be a list"),
        ([], "data.files is empty"),
        (["B2", "B2"], r"lists \['B2'\] more than once"),
        ([{"name": "B2", "resampling": "bicubic"}], "resampling 'bicubic' is not one of"),
        ([{"name": "B2", "band": [1]}], r"unknown keys \['band'\]"),
        ([{"name": "B2", "bands": ["x"]}], "must be 1-based band indices"),
        ([{"bands": [1]}], "must be a file name like B4 or a mapping"),
    ],
)
def test_bad_files_entries_are_one_line(value, message):
    with pytest.raises(GeosegError, match=message):
        parse_files(value)


def test_a_list_where_a_pattern_is_expected_is_one_line(tmp_path):
    with pytest.raises(GeosegError, match=r"must be one glob pattern \(a string\), got \['a.tif', 'b.tif'\]; "
                       r"for bands in several files put a \{file\} placeholder"):  # fmt: skip
        find_scene_files(str(tmp_path), ["a.tif", "b.tif"], None)


def test_mixed_dtypes_in_one_vrt_are_one_line(tmp_path):
    a = write_tif(tmp_path / "v_a.tif", np.ones((H, W), np.float32), ORIGIN)
    b = write_tif(tmp_path / "v_b.tif", np.ones((H, W), np.int16), ORIGIN)
    vrt = _vrt(tmp_path / "mixed.vrt", [(a, 1, "Float32", None), (b, 1, "Int16", None)], a)
    with pytest.raises(GeosegError, match=r"'.*mixed.vrt' mixes band dtypes \(float32, int16\); .* separate "
                       "data.files entries") as err:  # fmt: skip
        inspect_scene(str(vrt), None)
    assert "\n" not in str(err.value)


TWO_WORKERS = """
import sys
import numpy as np
from torch.utils.data import DataLoader
from geoseg.data.band_files import parse_files
from geoseg.data.dataset import ChipDataset, collate_batch
from geoseg.data.labels import ClassMap
from geoseg.data.scenes import inspect_scene
from geoseg.data.windows import Chip
scene = inspect_scene(sys.argv[1:4], None, files=parse_files(["B1", "B2", "B3"]))
ds = ChipDataset([scene], 16, ClassMap([0, 1]), fill=[1.0, 2.0, 3.0])
chips = [[Chip(0, r, c) for r, c in [(0, 0), (8, 16), (32, 48)]], [Chip(0, 20, 20), Chip(0, 1, 47)]]
loaders = [DataLoader(ds, batch_sampler=chips, num_workers=w, collate_fn=collate_batch) for w in (0, 2)]
runs = [[b["image"].numpy() for b in loader] for loader in loaders]
assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True)) and len(runs[1]) == 2
print("same")
"""


def test_two_workers_give_the_same_chips_as_zero(tmp_path):
    """In a fresh process: pytest's may hold a GDAL thread pool (another test's) a fork would not survive."""
    paths, _, _ = _landsat(tmp_path)
    args = [sys.executable, "-c", TWO_WORKERS, *map(str, paths)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "same", proc.stderr[-2000:]


def _vrt(path: Path, sources: list[tuple[Path, int, str, float | None]], like: Path) -> Path:
    """A VRT of (file, band, dtype, nodata) sources on the grid of ``like``; each band declares its nodata."""
    with rasterio.open(like) as src:
        geo, wkt, h, w = (
            ", ".join(str(v) for v in src.transform.to_gdal()),
            src.crs.to_wkt(),
            src.height,
            src.width,
        )
    bands = "".join(
        f'<VRTRasterBand dataType="{t}" band="{i}">'
        + ("" if nd is None else f"<NoDataValue>{nd}</NoDataValue>")
        + f'<SimpleSource><SourceFilename relativeToVRT="0">{p}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for i, (p, b, t, nd) in enumerate(sources, start=1)
    )
    path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{wkt}</SRS>'
                    f"<GeoTransform>{geo}</GeoTransform>{bands}</VRTDataset>")  # fmt: skip
    return path


def _perband(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Six float32 bands: bands 1-5 use -99999 for no data, band 6 uses -32768 (a Landsat stack)."""
    rng = np.random.default_rng(5)
    img = rng.normal(1000, 100, size=(6, H, W)).astype(np.float32)
    img[:5, :3, :] = -99999
    img[5, 20:30, 10:30] = -32768  # in band 6 only
    path = write_tif(tmp_path / "stack.tif", img, ORIGIN)
    invalid = (img[:5] == -99999).any(0) | (img[5] == -32768)
    return path, img, invalid


@pytest.mark.parametrize("declared_by", ["vrt", "data.nodata"])
def test_per_band_nodata_in_one_file_any_rule_and_statistics(tmp_path, declared_by):
    path, img, invalid = _perband(tmp_path)
    values = [-99999.0] * 5 + [-32768.0]
    if declared_by == "vrt":  # the file declares a nodata value per band
        src = _vrt(tmp_path / "perband.vrt", [(path, b, "Float32", v) for b, v in enumerate(values, 1)], path)
        scene = inspect_scene(str(src), None)
    else:  # a GeoTIFF holds one nodata value: give one per band in the config
        scene = inspect_scene(str(path), None, nodata=values)
    assert scene.band_nodata == tuple(values)
    chip = ChipDataset([scene], 32, ClassMap([0]), fill=[0.0] * 6)[Chip(0, 0, 0)]["image"].numpy()
    np.testing.assert_array_equal((chip == 0).all(0), invalid[:32, :32])
    stats = compute_stats([scene], progress=False)
    for b in range(6):
        np.testing.assert_allclose(stats.mean[b], img[b][~invalid].astype(np.float64).mean(), rtol=1e-9)
        assert stats.min[b] > 0
    assert stats.count == (~invalid).sum()


def test_a_nodata_list_of_the_wrong_length_is_one_line(tmp_path):
    path, _, _ = _perband(tmp_path)
    with pytest.raises(GeosegError, match=r"data.nodata lists 2 values but the stack of '.*stack.tif' has 6 "
                       "bands"):  # fmt: skip
        inspect_scene(str(path), None, nodata=[0, 1])


def test_a_band_statistic_on_a_nodata_value_warns(tmp_path, caplog):
    """One dataset nodata (-99999) for every band while band 2 marks its gaps with -32768."""
    paths, _, _ = _landsat(tmp_path)
    with caplog.at_level(logging.WARNING):
        compute_stats([_scene(paths, nodata=-99999.0)], progress=False)
    assert any("band 2 (B2) has min -32768" in r.getMessage() for r in caplog.records)


def test_single_band_glob_of_numbered_files_warns(tmp_path, caplog):
    for k in (1, 2, 3):
        write_tif(tmp_path / f"lsat7_2000_{k}0.tif", np.full((H, W), k, np.uint8), ORIGIN)
    cfg = {"root": str(tmp_path), "splits": {"train": {"images": "lsat7_2000_*.tif"}},
           "classes": [{"code": 0}], "chip_size": 16, "max_nodata_fraction": 0.5, "batch_size": 2,
           "ignore_index": 255}  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert len(load_scenes(cfg, "train")) == 3
    assert any(
        "3 single-band images" in r.getMessage() and "data.files" in r.getMessage() for r in caplog.records
    )


def test_pattern_keeps_every_wildcard_and_names_the_scene(tmp_path):
    for scene in ("LC08_224078_2020", "LC08_224079_2021"):
        (tmp_path / scene).mkdir()
        for band in ("B2", "B3"):
            write_tif(tmp_path / scene / f"{scene}_SR_{band}.TIF", np.ones((4, 4), np.uint8), ORIGIN)
    found = expand_pattern(str(tmp_path / "*" / "LC08_*_SR_{file}.TIF"), parse_files(["B2", "B3"]), "x")
    assert [tuple(Path(p).name for p in s) for s in found] == [
        ("LC08_224078_2020_SR_B2.TIF", "LC08_224078_2020_SR_B3.TIF"),
        ("LC08_224079_2021_SR_B2.TIF", "LC08_224079_2021_SR_B3.TIF"),
    ]
    assert scene_name(found[0][0], "B2") == "LC08_224078_2020_SR"
    assert scene_name("/x/Spain_1_S2Hand.tif", "S2Hand") == "Spain_1"


def test_bands_by_name_and_file_index_and_the_manifest(tmp_path):
    paths, _, _ = _landsat(tmp_path)
    scene = _scene(paths, bands=["B3", "B1:1", 2])
    assert scene.bands == (3, 1, 2)
    with pytest.raises(GeosegError, match="band 'B9' is not a band name"):
        _scene(paths, bands=["B9"])
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,split\n" + ";".join(p.name for p in paths) + ",train\n")
    ((images, label),) = read_manifest(str(manifest), "train", FILES)
    assert [Path(p).name for p in images] == [p.name for p in paths] and label is None
    manifest.write_text("image,split\n" + paths[0].name + ",train\n")
    with pytest.raises(GeosegError, match=r"line 2 lists 1 image files but data.files has 3 entries"):
        read_manifest(str(manifest), "train", FILES)


def test_predict_on_three_files_equals_predict_on_the_prestacked_file(tmp_path):
    from geoseg.engine.checkpoint import save_model_checkpoint
    from geoseg.inference.inputs import find_inputs, output_paths
    from geoseg.inference.loaded import load_model
    from geoseg.inference.predict import PredictOptions, predict_scene, prepare
    from geoseg.models.build import build_model

    paths, stack, invalid = _landsat(tmp_path)
    stacked = tmp_path / "stacked.tif"
    write_tif(stacked, np.where(invalid, np.float32(-1), stack).astype(np.float32), ORIGIN, nodata=-1)
    scene = _scene(paths)
    stats = compute_stats([scene], progress=False)
    torch.manual_seed(0)
    norm = {"_target_": "torch.nn.BatchNorm2d", "_partial_": True}
    model = build_model("unet", "resnet18", 3, 2, torch.nn.BatchNorm2d, encoder_depth=3,
                        decoder={"decoder_channels": [16, 8, 8]}, stats=stats)  # fmt: skip
    classes = [{"code": 0, "name": "a"}, {"code": 1, "name": "b"}]
    data = {"files": ["B1", "B2", "B3"], "invalid": "any", "grid": "finest", "classes": classes}
    multi_ckpt, single_ckpt = tmp_path / "multi.pt", tmp_path / "single.pt"
    save_model_checkpoint(multi_ckpt, model, asdict(stats), {"norm": norm, "data": data})
    single = {"classes": classes, "invalid": "any"}
    save_model_checkpoint(single_ckpt, model, asdict(stats), {"norm": norm, "data": single})
    opts = PredictOptions(tile=32, overlap=8, batch_size=2, progress=False, quicklook=True)
    outputs = {}
    for name, ckpt, spec in [("multi", multi_ckpt, str(tmp_path / "LC08_*_SR_{file}.TIF")),
                             ("single", single_ckpt, str(stacked))]:  # fmt: skip
        loaded = load_model(str(ckpt), torch.device("cpu"))
        inputs = find_inputs(spec, loaded.files)
        out_dir = tmp_path / name
        names = ["LC08_X_SR"] if name == "multi" else None
        (job,) = prepare(loaded, inputs, output_paths(inputs, str(out_dir), names), opts)
        result = predict_scene(loaded, job, opts, torch.device("cpu"), None)
        with rasterio.open(result["output"]) as src:
            outputs[name] = src.read(1)
            assert src.crs == UTM and src.transform == ORIGIN
        assert Path(job.outputs["quicklook"]).exists()
    assert Path(tmp_path / "multi" / "LC08_X_SR.tif").exists()
    np.testing.assert_array_equal(outputs["multi"], outputs["single"])
    assert (outputs["multi"] == 255).sum() == invalid.sum()
