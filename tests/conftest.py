"""Shared fixtures: tiny GeoTIFFs written with rasterio in ``tmp_path``."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

# tests never reach the internet: Hugging Face lookups (encoder.weights=imagenet) read the cache only
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
UTM = CRS.from_epsg(32633)


def write_tif(
    path: Path,
    data: np.ndarray,
    transform=None,
    crs=UTM,
    nodata=None,
    tiled: bool = False,
    block: int = 16,
    descriptions=None,
) -> Path:
    """Write a (C, H, W) or (H, W) array as a GeoTIFF and return its path."""
    data = data[None] if data.ndim == 2 else data
    profile = dict(
        driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
        transform=transform or from_origin(500_000, 5_000_000, 10, 10), nodata=nodata,
    )  # fmt: skip
    if crs is not None:
        profile["crs"] = crs
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for b, name in enumerate(descriptions or (), start=1):
            dst.set_band_description(b, name)
    return path


@pytest.fixture
def scene_pair(tmp_path: Path):
    """A 3-band uint16 image (nodata 0 in a corner) and a same-grid label with codes 0..2 (nodata 255)."""
    rng = np.random.default_rng(0)
    h, w = 40, 48
    img = rng.integers(1, 1000, size=(3, h, w), dtype=np.uint16)
    img[:, :8, :10] = 0
    lab = rng.integers(0, 3, size=(h, w), dtype=np.uint8)
    lab[-3:, -3:] = 255
    image = write_tif(tmp_path / "img.tif", img, nodata=0, tiled=True, descriptions=["blue", "green", "nir"])
    label = write_tif(tmp_path / "lab.tif", lab, nodata=255)
    return image, label, img, lab


def free_port() -> int:
    """A TCP port that is free now, for a test's DDP rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_geoseg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m geoseg ARGS`` in ``cwd``, output captured, Hydra's short errors on."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "geoseg", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


@pytest.fixture
def geoseg():
    """The ``geoseg`` command line as a function: ``geoseg("stats", "data.chip_size=32", cwd=tmp_path)``."""
    return run_geoseg


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Demo scenes of 128×128 px (4 train, 2 val), written once per session."""
    from geoseg.data.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "demo", size=128)


def compose_config(config_name: str, *overrides: str, hydra: bool = False):
    """The shipped ``configs/<config_name>.yaml`` composed with ``overrides`` (Hydra's section too when
    ``hydra``), as ``geoseg <command>`` composes it."""
    from hydra import compose, initialize_config_dir

    from geoseg.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(name="compose_config")
def compose_config_fixture():
    """:func:`compose_config` for a test: ``compose_config("stats", "data.chip_size=32")``."""
    return compose_config


def tiny_run(root: Path, *overrides: str) -> list[str]:
    """The ``geoseg train`` overrides of every tiny test run: the demo-layout scenes under ``root``, a few
    32-px chips, a small U-Net/ResNet-18, CPU, no bar, TensorBoard or latest link; ``overrides`` win."""
    return [
        f"data.root={root}", "data.demo=null", f"data.stats_path={root}/stats.json", "data.chip_size=32",
        "data.batch_size=4", "data.chips_per_epoch=16", "data.num_workers=0", "data.val_stride=64",
        "model.decoder_channels=[32,16,16,8,8]", "trainer.device=cpu", "trainer.progress=false",
        "trainer.tensorboard=false", "trainer.latest_link=null", "trainer.log_every=1", *overrides,
    ]  # fmt: skip


def tiny_train_cfg(root: Path, *overrides: str):
    """The shipped ``train`` config shrunk by :func:`tiny_run` (for in-process ``fit``)."""
    return compose_config("train", *tiny_run(root, *overrides))


def save_tiny_checkpoint(
    path: Path, image: Path, classes: int = 3, norm: str = "groupnorm", bands=None, nodata=None, seed: int = 0
) -> Path:
    """A geoseg checkpoint of an untrained tiny U-Net whose band statistics come from ``image``."""
    import torch

    from geoseg.data.scenes import inspect_scene
    from geoseg.data.stats import compute_stats
    from geoseg.engine.checkpoint import save_model_checkpoint
    from geoseg.models.build import build_model

    stats = compute_stats([inspect_scene(str(image), None, bands=bands, nodata=nodata)], progress=False)
    torch.manual_seed(seed)
    norm_cfg = {"_target_": "torch.nn.BatchNorm2d", "_partial_": True} if norm == "batchnorm" else {
        "_target_": "geoseg.models.norms.GroupNorm", "_partial_": True, "num_groups": 4}  # fmt: skip
    from hydra.utils import instantiate

    model = build_model("unet", "resnet18", len(stats.bands), classes, instantiate(norm_cfg), encoder_depth=3,
                        decoder={"decoder_channels": [16, 8, 8]}, stats=stats)  # fmt: skip
    names = [
        {"code": 10 * i, "name": f"class{i}", "color": [60 * i, 200 - 50 * i, 90]} for i in range(classes)
    ]
    save_model_checkpoint(path, model, asdict(stats), {
        "norm": norm_cfg, "data": {"bands": bands, "nodata": nodata, "classes": names}})  # fmt: skip
    return path


@pytest.fixture
def restore_gdal_config() -> Iterator[None]:
    """Put back the GDAL options a test sets in this process (configure_gdal, as a worker does).

    A ``GDAL_NUM_THREADS`` left in the main process starts GDAL's decoding thread pool at the next
    read, and a DataLoader that forks workers after that hangs (the pool does not survive fork).
    """
    from rasterio._env import del_gdal_config, get_gdal_config, set_gdal_config

    keys = ("GDAL_CACHEMAX", "GDAL_NUM_THREADS", "GDAL_DISABLE_READDIR_ON_OPEN")
    before = {key: get_gdal_config(key, normalize=False) for key in keys}
    yield
    for key, value in before.items():
        if value is None:
            del_gdal_config(key)
        else:
            set_gdal_config(key, value, normalize=False)


def drop_hydra_log_handlers() -> None:
    """Drop the root log handlers an in-process ``geoseg.cli.main`` run's Hydra installed.

    They hold the test's captured stdout (or its run folder's train.log); a later log record
    outside Hydra would otherwise be written to a closed stream.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if not type(h).__module__.startswith("_pytest")]:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture
def release_hydra_logging() -> Iterator[None]:
    """:func:`drop_hydra_log_handlers` after the test."""
    yield
    drop_hydra_log_handlers()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``geoseg ARGS`` in-process: (exit status, stdout, stderr)."""
    from geoseg.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def run_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``geoseg ARGS`` in-process; check it exits 2 with exactly one stderr line, no traceback, and
    Hydra released for the next run; return that line."""
    from hydra.core.global_hydra import GlobalHydra

    from geoseg.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not GlobalHydra.instance().is_initialized()
    return err.rstrip("\n")
