"""Bad inputs through the real ``geoseg`` command line, in-process: each one exits with status 2 and
exactly one line ``geoseg: error: <message>`` on stderr (the message pinned in full), never a traceback."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC
from rasterio.transform import from_origin

from conftest import run_error, save_tiny_checkpoint, write_tif
from geoseg.cli import main

SIZE = 64  # px, every test scene is SIZE x SIZE
# train overrides that build the same model as conftest.save_tiny_checkpoint (U-Net, depth 3, GroupNorm(4))
TINY_MODEL = ("encoder.depth=3", "model.decoder_channels=[16,8,8]", "norm=groupnorm", "norm.num_groups=4")


pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)


def pixels(bands: int = 3, seed: int = 0) -> np.ndarray:
    """A (bands, SIZE, SIZE) uint16 image with no nodata pixel (nodata is 0, values start at 1)."""
    return np.random.default_rng(seed).integers(1, 1000, size=(bands, SIZE, SIZE), dtype=np.uint16)


def classes(seed: int = 0) -> np.ndarray:
    """A (SIZE, SIZE) label of the demo config's class codes 0..3."""
    return np.random.default_rng(seed).integers(0, 4, size=(SIZE, SIZE), dtype=np.uint8)


def make_root(root: Path, bands: int = 3) -> Path:
    """A data root laid out like configs/data/demo.yaml: one train scene ``a`` and one val scene ``v``."""
    for split, name, seed in (("train", "a", 0), ("val", "v", 1)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        write_tif(root / split / "images" / f"{name}.tif", pixels(bands, seed), nodata=0)
        write_tif(root / split / "labels" / f"{name}.tif", classes(seed), nodata=255)
    return root


def train_args(root: Path, *overrides: str) -> list[str]:
    """``geoseg train`` on ``root`` shrunk like conftest.tiny_train_cfg: 32-px chips, a small U-Net, CPU."""
    return [
        "train", f"hydra.run.dir={root}/run", f"data.root={root}", "data.demo=null",
        f"data.stats_path={root}/stats.json", "data.chip_size=32", "data.batch_size=4",
        "data.chips_per_epoch=16", "data.num_workers=0", "model.decoder_channels=[32,16,16,8,8]",
        "trainer.device=cpu", "trainer.progress=false", "trainer.latest_link=null",
        "trainer.tensorboard=false", *overrides,
    ]  # fmt: skip


def stats_args(root: Path) -> list[str]:
    """``geoseg stats`` of the train split of ``root``."""
    return ["stats", f"data.root={root}", "data.demo=null", f"output={root}/stats.json", "progress=false"]


def predict_args(checkpoint: Path, image: Path, *overrides: str) -> list[str]:
    """``geoseg predict`` of one scene on the CPU, next to the input."""
    out = image.with_name(f"{image.stem}_pred.tif")
    return ["predict", f"checkpoint={checkpoint}", f"input={image}", f"output={out}", "device=cpu",
            "progress=false", *overrides]  # fmt: skip


def truncate(path: Path) -> None:
    """Cut a file in half, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def not_a_raster(path: Path) -> None:
    """Replace a file by text that happens to carry a .tif name."""
    path.write_text("image,label\nscene.tif,labels.tif\n")


def drop_crs(path: Path) -> None:
    """Rewrite a raster with the same pixels and transform but no CRS."""
    with rasterio.open(path) as src:
        data, transform, nodata = src.read(), src.transform, src.nodata
    write_tif(path, data, transform=transform, crs=None, nodata=nodata)


def to_gcps(path: Path, rpcs: bool = False) -> None:
    """Rewrite a raster with the same pixels, georeferenced by three ground control points (or by RPCs)
    instead of a geotransform and CRS, as a SAR or L1 product is."""
    with rasterio.open(path) as src:
        data, t, crs, nodata = src.read(), src.transform, src.crs, src.nodata
    rows, cols = data.shape[1:]
    corners = [(0, 0), (0, cols), (rows, 0)]
    points = [GroundControlPoint(r, c, *(t * (c, r))) for r, c in corners]
    profile = dict(driver="GTiff", width=cols, height=rows, count=len(data), dtype=data.dtype, nodata=nodata)
    one, row, col = [1.0, *[0.0] * 19], [0.0, 0.0, -1.0, *[0.0] * 17], [0.0, 1.0, *[0.0] * 18]
    rpc = RPC(height_off=0, height_scale=100, lat_off=45, lat_scale=0.01, line_den_coeff=one,
              line_num_coeff=row, line_off=rows / 2, line_scale=rows / 2, long_off=7, long_scale=0.01,
              samp_den_coeff=one, samp_num_coeff=col, samp_off=cols / 2, samp_scale=cols / 2)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if rpcs:
                dst.rpcs = rpc
            else:
                dst.gcps = (points, crs)


def to_complex(path: Path) -> None:
    """Rewrite a raster with the same pixels as complex64 (a SAR SLC)."""
    with rasterio.open(path) as src:
        data, transform, nodata = src.read(), src.transform, src.nodata
    write_tif(path, data.astype(np.complex64), transform=transform, nodata=nodata)


def image_of(root: Path) -> Path:
    return root / "train" / "images" / "a.tif"


def label_of(root: Path) -> Path:
    return root / "train" / "labels" / "a.tif"


TRUNCATED = (
    "{what} '{path}' is truncated or corrupt (GDAL cannot read its pixels); re-download or re-export it."
)
NOT_RASTER = (
    "cannot read {what} '{path}' as a raster (GDAL does not recognise its format); "
    "check that it is a complete GeoTIFF."
)
FILE_CASES: list[tuple[str, Callable[[Path], None], Callable[[Path], Path], str]] = [
    ("truncated-image", truncate, image_of, TRUNCATED.replace("{what}", "image")),
    ("truncated-label", truncate, label_of, TRUNCATED.replace("{what}", "label")),
    ("image-not-a-raster", not_a_raster, image_of, NOT_RASTER.replace("{what}", "image")),
    ("label-not-a-raster", not_a_raster, label_of, NOT_RASTER.replace("{what}", "label")),
    ("image-without-crs", drop_crs, image_of,
     "image '{path}' has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:xxxx)."),
    ("label-without-crs", drop_crs, label_of,
     "label '{path}' has no CRS; assign one or write it on the image grid."),
    ("image-georeferenced-by-gcps", to_gcps, image_of,
     "image '{path}' is georeferenced by GCPs, not a map grid; warp it onto one first "
     "(gdalwarp -t_srs EPSG:xxxx in.tif out.tif)."),
    ("complex-image", to_complex, image_of,
     "'{path}' has complex bands (complex64, e.g. SAR SLC); geoseg reads real values: convert it to "
     "amplitude or intensity first (e.g. a VRT with PixelFunctionType mod or intensity)."),
    ("label-file-missing", Path.unlink, label_of,
     "label file not found: '{path}'. Check the path or the data.* options."),
]  # fmt: skip


@pytest.mark.parametrize("command", ["train", "stats"])
@pytest.mark.parametrize(
    ("spoil", "target", "expected"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_a_broken_scene_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
    spoil: Callable[[Path], None], target: Callable[[Path], Path], expected: str,
) -> None:  # fmt: skip
    """Truncated, non-raster, CRS-less and missing image/label files stop train and stats at start-up."""
    root = make_root(tmp_path / "data")
    path = target(root)
    spoil(path)
    args = train_args(root) if command == "train" else stats_args(root)
    assert run_error(capsys, *args) == "geoseg: error: " + expected.format(path=path)
    assert not (root / "stats.json").exists()  # nothing was computed before the check


def test_a_label_in_another_crs_without_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A label in EPSG:4326 far from the UTM image is refused with both CRSs named."""
    root = make_root(tmp_path / "data")
    write_tif(label_of(root), classes()[:8, :8], crs=CRS.from_epsg(4326),
              transform=from_origin(100.0, -30.0, 0.001, 0.001))  # fmt: skip
    assert run_error(capsys, *train_args(root)) == (
        f"geoseg: error: label '{label_of(root)}' (EPSG:4326) does not overlap image '{image_of(root)}' "
        "(EPSG:32633); check that the label belongs to this image and that both CRSs are right."
    )


def test_a_label_value_outside_the_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Label code 9 is not in data.classes (codes 0..3): refused under data.unknown_labels=error."""
    root = make_root(tmp_path / "data")
    label = classes()
    label[5, 7] = 9
    write_tif(label_of(root), label, nodata=255)
    assert run_error(capsys, *train_args(root, "data.unknown_labels=error")) == (
        f"geoseg: error: label '{label_of(root)}' has values [9] that are not in data.classes (codes "
        "[0, 1, 2, 3]); add them to data.classes, set data.label_nodata, or set data.unknown_labels=ignore."
    )


def test_the_only_training_scene_all_nodata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One all-nodata train scene and nothing else: train and stats stop and name the scene."""
    root = make_root(tmp_path / "data")
    write_tif(image_of(root), np.zeros((3, SIZE, SIZE), np.uint16), nodata=0)
    expected = (
        f"geoseg: error: the only scene '{image_of(root)}' is all nodata (image nodata 0.0); "
        "check data.nodata or add scenes with valid pixels."
    )
    assert run_error(capsys, *stats_args(root)) == expected
    assert run_error(capsys, *train_args(root)) == expected


def test_the_only_training_scene_all_nodata_with_cached_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With stats.json already there (no statistics pass), the chip sampler names the empty scene."""
    root = make_root(tmp_path / "data")
    assert main(stats_args(root)) is None  # statistics of the good scene, for band and nodata checks
    write_tif(image_of(root), np.zeros((3, SIZE, SIZE), np.uint16), nodata=0)
    cached = root / "stats.json"  # keyed by the files' sizes and times: drop the key (a pre-key file),
    cached.write_text(json.dumps({k: v for k, v in json.loads(cached.read_text()).items() if k != "key"}))
    capsys.readouterr()  # so the statistics are read, not recomputed
    assert run_error(capsys, *train_args(root)) == (
        f"geoseg: error: the only training scene '{image_of(root)}' is all nodata (image nodata 0.0, or "
        "no labelled pixel); check data.nodata and its label, or add scenes with valid pixels."
    )


def test_an_all_nodata_scene_among_good_ones_is_skipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second, all-nodata train scene is logged as skipped and one training step still runs."""
    root = make_root(tmp_path / "data")
    empty = write_tif(root / "train" / "images" / "b.tif", np.zeros((3, SIZE, SIZE), np.uint16), nodata=0)
    write_tif(root / "train" / "labels" / "b.tif", classes(2), nodata=255)
    main(train_args(root, "trainer.max_steps=1", "trainer.diagnostics.train_max_chips=0"))
    out, err = capsys.readouterr()
    assert err == ""
    warning = (
        f"WARNING: training scene '{empty}' is all nodata (image nodata 0.0, or no "
        "labelled pixel); it is skipped"
    )
    assert sum(line.endswith(warning) for line in out.splitlines()) == 1, out
    assert (root / "run" / "last.pt").exists()


def test_a_chip_size_the_encoder_cannot_divide(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """data.chip_size=30 against a U-Net/ResNet-18 of output stride 32 fails before the first step."""
    root = make_root(tmp_path / "data")
    assert run_error(capsys, *train_args(root, "data.chip_size=30")) == (
        "geoseg: error: data.chip_size=30 is not a multiple of 32, the output stride of unet/resnet18 with "
        "encoder.depth=5; use e.g. data.chip_size=32"
    )
    assert not (root / "run" / "last.pt").exists()


def test_groupnorm_groups_that_do_not_divide_the_channels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """norm.num_groups=7 under the strict policy is refused at the first layer it cannot split."""
    root = make_root(tmp_path / "data")
    args = train_args(root, "norm=groupnorm", "norm.num_groups=7", "norm.group_policy=strict")
    assert run_error(capsys, *args) == (
        "geoseg: error: norm layer 'encoder.bn1': norm.num_groups=7 does not divide 64 channels; pick a "
        "num_groups that does or set norm.group_policy=divisor"
    )


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """conftest's inference checkpoint (U-Net depth 3, GroupNorm(4), 3 bands, 4 classes)."""
    image = write_tif(tmp_path / "stats_source.tif", pixels(seed=5), nodata=0)
    return save_tiny_checkpoint(tmp_path / "unet.pt", image, classes=4)


def fpn_checkpoint(path: Path, like: Path) -> Path:
    """A checkpoint of an FPN with ``like``'s encoder, depth, norm, bands and statistics."""
    from geoseg.data.stats import BandStats
    from geoseg.engine.checkpoint import save_model_checkpoint
    from geoseg.models.build import build_model
    from geoseg.models.norms import GroupNorm

    norm = functools.partial(GroupNorm, num_groups=4)
    saved = torch.load(like, weights_only=True)
    stats = BandStats(**saved["stats"])
    decoder = {"decoder_segmentation_channels": 32, "decoder_pyramid_channels": 32}
    model = build_model("fpn", "resnet18", 3, 4, norm, encoder_depth=3, decoder=decoder, stats=stats)
    save_model_checkpoint(path, model, asdict(stats), saved["config"])
    return path


def test_resume_from_a_checkpoint_of_another_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """trainer.resume= an FPN checkpoint while the config builds a U-Net: only the arch differs."""
    root = make_root(tmp_path / "data")
    fpn = fpn_checkpoint(tmp_path / "fpn.pt", tiny_checkpoint)
    assert run_error(capsys, *train_args(root, *TINY_MODEL, f"trainer.resume={fpn}")) == (
        f"geoseg: error: checkpoint '{fpn}' was trained with another model (arch: 'fpn' vs 'unet'); resume "
        "with the same model/encoder/norm/data options or start a new run"
    )


def test_resume_with_another_band_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """A 3-band checkpoint resumed on 4-band scenes names both band lists."""
    root = make_root(tmp_path / "data", bands=4)
    assert run_error(capsys, *train_args(root, *TINY_MODEL, f"trainer.resume={tiny_checkpoint}")) == (
        f"geoseg: error: checkpoint '{tiny_checkpoint}' was trained with another model (in_channels: 3 vs 4; "
        "bands: [1, 2, 3] vs [1, 2, 3, 4]); resume with the same model/encoder/norm/data options or start a "
        "new run"
    )


def test_start_weights_with_another_band_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """encoder.weights= a 3-band geoseg checkpoint with unnamed bands, for a 4-band model, is refused."""
    root = make_root(tmp_path / "data", bands=4)
    assert run_error(capsys, *train_args(root, f"encoder.weights={tiny_checkpoint}")) == (
        f"geoseg: error: encoder.weights={tiny_checkpoint} was trained on 3 input channels but this model "
        "has 4, and their bands cannot be matched by name; select the same bands (data.bands) to start "
        "from it"
    )


def test_start_weights_of_another_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """encoder.weights= a MobileNetV3 state dict for a ResNet-18 encoder matches almost nothing."""
    import torchvision

    root = make_root(tmp_path / "data")
    weights = tmp_path / "mobilenet_v3_small.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), weights)
    assert run_error(capsys, *train_args(root, f"encoder.weights={weights}")) == (
        f"geoseg: error: encoder.weights={weights} matches 5 of the encoder's 100 tensors (missing e.g. "
        "conv1.weight, bn1.weight, bn1.bias); is it a state dict of this encoder?"
    )


def test_resume_with_other_decoder_channels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """Same arch/encoder/norm, other decoder widths: should be check_same_model's one line too."""
    root = make_root(tmp_path / "data")
    wider = "model.decoder_channels=[32,16,16]"
    args = train_args(root, *TINY_MODEL, wider, f"trainer.resume={tiny_checkpoint}")
    line = run_error(capsys, *args)
    assert line.startswith(f"geoseg: error: checkpoint '{tiny_checkpoint}' was trained with another model (")
    assert "decoder: " in line and line.endswith("start a new run")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epoch=3", "unknown option 'trainer.max_epoch'; did you mean 'trainer.max_epochs'? "
         "(every option: geoseg train --help)"),
        ("norm=groupnrom", "unknown norm 'groupnrom'; did you mean 'groupnorm'? (choose from auto, "
         "batchnorm, frn, frozenbatchnorm, groupnorm, groupnorm_ws, identity, instancenorm, layernorm, "
         "syncbatchnorm)"),
        ("data.chip_sise=32", "unknown option 'data.chip_sise'; did you mean 'data.chip_size'? "
         "(every option: geoseg train --help)"),
    ],
)  # fmt: skip
def test_a_config_typo_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, override: str,
    message: str,
) -> None:  # fmt: skip
    """A misspelt key or option: the nearest valid one, before any file is read or folder made."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    root = tmp_path / "no-data-here"  # were it read, geoseg would exit 2: "data.root ... is not a folder"
    assert run_error(capsys, *train_args(root, override)) == f"geoseg: error: {message}"
    assert not root.exists()  # not even hydra.run.dir={root}/run


def test_predict_a_scene_with_another_band_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """A 4-band scene for a model trained on all 3 bands of its scenes."""
    image = write_tif(tmp_path / "four.tif", pixels(4), nodata=0)
    assert run_error(capsys, *predict_args(tiny_checkpoint, image)) == (
        f"geoseg: error: input '{image}' has 4 bands but '{tiny_checkpoint}' was trained on 3 (all bands of "
        "its scenes); pass scenes with the same 3 bands"
    )


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (truncate, TRUNCATED.replace("{what}", "input")),
        (not_a_raster, NOT_RASTER.replace("{what}", "input")),
        (Path.unlink, "input file not found: '{path}'. Check the path or the input= option."),
    ],
    ids=["truncated", "not-a-raster", "missing"],
)
def test_predict_a_broken_input_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path,
    spoil: Callable[[Path], None], expected: str,
) -> None:  # fmt: skip
    """Broken inputs are refused before any tile is computed or any output written."""
    image = write_tif(tmp_path / "scene.tif", pixels(), nodata=0)
    spoil(image)
    assert run_error(capsys, *predict_args(tiny_checkpoint, image)) == "geoseg: error: " + expected.format(
        path=image
    )
    assert not (tmp_path / "scene_pred.tif").exists()


def test_predict_a_scene_without_crs_warns_and_writes_no_crs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """A CRS-less input is predicted (the class map has no CRS either) with a warning, not refused."""
    image = write_tif(tmp_path / "nocrs.tif", pixels(), crs=None, nodata=0)
    main(predict_args(tiny_checkpoint, image))
    out, err = capsys.readouterr()
    assert err == ""
    assert f"input '{image}' has no CRS; its prediction will have none either" in out.splitlines()
    with rasterio.open(tmp_path / "nocrs_pred.tif") as pred:
        assert pred.crs is None and pred.shape == (SIZE, SIZE)


@pytest.mark.parametrize(("rpcs", "kind"), [(False, "ground control points"), (True, "RPCs")])
def test_predict_a_scene_georeferenced_by_gcps_or_rpcs_writes_them_to_its_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path, rpcs: bool, kind: str
) -> None:
    """An input with ground control points (or RPCs) and no geotransform is predicted on its pixel grid,
    and the class map and probabilities carry the same GCPs (RPCs), so they overlay the input in a GIS
    (they had no georeference at all before)."""
    image = write_tif(tmp_path / "l1.tif", pixels(), nodata=0)
    to_gcps(image, rpcs)
    main(predict_args(tiny_checkpoint, image, "probabilities=true", "cog=true"))
    out, err = capsys.readouterr()
    assert err == ""  # no rasterio NotGeoreferencedWarning: geoseg says it in its own words
    assert f"input '{image}' is georeferenced by {kind}, not a map grid" in out
    with rasterio.open(image) as src:
        (points, crs), rpc = src.gcps, src.rpcs
    for name in ("l1_pred.tif", "l1_pred_probs.tif"):
        with rasterio.open(tmp_path / name) as pred:
            got, got_crs = pred.gcps
            assert pred.crs is None and pred.shape == (SIZE, SIZE) and got_crs == crs
            assert [(p.row, p.col, p.x, p.y) for p in got] == [(p.row, p.col, p.x, p.y) for p in points]
            assert (pred.rpcs and pred.rpcs.to_dict()) == (rpc and rpc.to_dict())


def test_predict_a_tile_the_encoder_cannot_divide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """tile=100 for a depth-3 encoder (output stride 8) suggests the next smaller multiple."""
    image = write_tif(tmp_path / "scene.tif", pixels(), nodata=0)
    assert run_error(capsys, *predict_args(tiny_checkpoint, image, "tile=100")) == (
        "geoseg: error: tile=100 must be a positive multiple of 8 (the model's output stride); "
        "use e.g. tile=96"
    )


def test_predict_with_a_checkpoint_without_statistics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """A checkpoint whose 'stats' entry is gone cannot normalise its inputs: say so, and how to fix it."""
    saved = torch.load(tiny_checkpoint, weights_only=True)
    del saved["stats"]
    bare = tmp_path / "no_stats.pt"
    torch.save(saved, bare)
    image = write_tif(tmp_path / "scene.tif", pixels(), nodata=0)
    assert run_error(capsys, *predict_args(bare, image)) == (
        f"geoseg: error: checkpoint '{bare}' has no band statistics (its 'stats' entry), so its inputs "
        "cannot be normalised; use the best.pt or last.pt of a geoseg train run, or re-save it with the "
        "stats.json of its training data (geoseg.engine.checkpoint.save_model_checkpoint)"
    )


def test_predict_with_weights_of_another_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_checkpoint: Path
) -> None:
    """A checkpoint whose meta says U-Net but whose weights are an FPN's: counts and examples, one line."""
    unet = torch.load(tiny_checkpoint, weights_only=True)
    fpn = torch.load(fpn_checkpoint(tmp_path / "fpn.pt", tiny_checkpoint), weights_only=True)["model"]
    mixed = tmp_path / "mixed.pt"
    torch.save({**unet, "model": fpn}, mixed)
    missing = [k for k in unet["model"] if k not in fpn]
    unexpected = [k for k in fpn if k not in unet["model"]]
    shapes = [k for k in unet["model"] if k in fpn and fpn[k].shape != unet["model"][k].shape]
    assert missing and unexpected and shapes
    image = write_tif(tmp_path / "scene.tif", pixels(), nodata=0)
    assert run_error(capsys, *predict_args(mixed, image)) == (
        f"geoseg: error: checkpoint '{mixed}' holds the weights of another model than the unet/resnet18 its "
        f"meta describes (missing tensors: {len(missing)}, e.g. '{missing[0]}'; unexpected tensors: "
        f"{len(unexpected)}, e.g. '{unexpected[0]}'; tensors of another shape: {len(shapes)}, e.g. "
        f"'{shapes[0]}'); use the checkpoint the training run wrote"
    )
