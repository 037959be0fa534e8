"""``geoseg convert``: scenes rewritten tiled and compressed, pixel for pixel, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import write_tif
from geoseg.cli import main

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)


def scenes(root: Path) -> list[Path]:
    """An untiled int16 image with nodata, band names and tags, a float32 one with NaN, a coloured label."""
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    image = write_tif(root / "a" / "img.tif", rng.integers(-500, 9000, (3, 150, 130), dtype="int16"),
                      nodata=-9999, descriptions=["red", "green", "nir"])  # fmt: skip
    with rasterio.open(image, "r+") as dst:
        dst.update_tags(sensor="S2", **{"level": "L2A"})
        dst.update_tags(1, wavelength="665")
    floats = rng.normal(size=(2, 100, 90)).astype("float32")
    floats[0, :5] = np.nan
    float_image = write_tif(root / "b.tif", floats, nodata=np.nan)
    label = write_tif(root / "a" / "label.tif", rng.integers(0, 4, (150, 130), dtype="uint8"), nodata=255)
    with rasterio.open(label, "r+") as dst:
        dst.write_colormap(1, {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)})
    return [image, float_image, label]


def convert(capsys, *args: str) -> tuple[int, str]:
    try:
        main(["convert", *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("compress", ["zstd", "lerc_zstd", "none"])
def test_converted_files_equal_the_originals_pixel_for_pixel(tmp_path, capsys, compress):
    sources = scenes(tmp_path / "in")
    code, err = convert(capsys, f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "block=64",
                        f"compress={compress}", "progress=false")  # fmt: skip
    assert code == 0, err
    for source in sources:
        target = tmp_path / "out" / source.relative_to(tmp_path / "in")  # the folder tree mirrored
        with rasterio.open(source) as a, rasterio.open(target) as b:
            assert np.array_equal(a.read(), b.read(), equal_nan=True)
            assert (a.crs, a.transform, a.dtypes, a.descriptions) == (
                b.crs,
                b.transform,
                b.dtypes,
                b.descriptions,
            )
            assert a.nodata == b.nodata or (np.isnan(a.nodata) and np.isnan(b.nodata))
            overviews = b.overviews(1)  # 2x, 4x, ... down to about one block
            assert b.block_shapes[0] == (64, 64) and overviews[0] == 2 and max(b.shape) / overviews[-1] < 64
            assert b.tags(1) == a.tags(1) and b.tags().get("sensor") == a.tags().get("sensor")
            if source.name == "img.tif":
                assert b.tags()["sensor"] == "S2" and b.tags(1)["wavelength"] == "665"
            if source.name == "label.tif":
                assert b.colormap(1)[1] == (255, 0, 0, 255)
            assert (b.compression is None) == (compress == "none")


def test_an_interrupted_conversion_resumes_and_leaves_no_temporary_file(tmp_path, capsys):
    scenes(tmp_path / "in")
    args = [f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "block=64", "progress=false"]
    assert convert(capsys, *args)[0] == 0
    first = tmp_path / "out" / "b.tif"
    stamp = first.stat().st_mtime_ns
    (tmp_path / "out" / "a" / "label.tif").unlink()  # as if the run had stopped before it
    assert convert(capsys, *args)[0] == 0
    assert first.stat().st_mtime_ns == stamp and (tmp_path / "out" / "a" / "label.tif").exists()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "b.tif",
        "img.tif",
        "label.tif",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress=jpeg"], "compress='jpeg' is not one of none, zstd, lzw, deflate, lerc_zstd"),
        (["block=100"], "block=100 must be a multiple of 16 px"),
        (["existing=maybe"], "existing='maybe' is not one of error, skip, overwrite"),
        (["input=/nonexistent/x.tif"], "no GeoTIFF under input='/nonexistent/x.tif'"),
    ],
)
def test_bad_options_are_one_line_before_anything_is_written(tmp_path, capsys, args, message):
    scenes(tmp_path / "in")
    code, err = convert(
        capsys, f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "progress=false", *args
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tif"))


def test_the_output_may_not_be_the_input_folder(tmp_path, capsys):
    scenes(tmp_path / "in")
    code, err = convert(capsys, f"input={tmp_path / 'in'}", f"output={tmp_path / 'in'}", "existing=overwrite")
    assert code == 2 and "would overwrite" in err
