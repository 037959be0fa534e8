"""The shell recipes the README and the documentation site show are run as written, so they stay true.

A ```bash block right after a ``<!-- recipe -->`` line is run with ``bash -e`` in a fresh folder;
``<!-- recipe: my_scenes -->`` first lays out ``my_scenes/`` there (the demo scenes' train/val
folders, as a user's own files, without the demo's manifest). ``<!-- recipe: stac -->`` runs against
real servers on 127.0.0.1 standing in for the network: a STAC API (the recipe's catalog, the only
substitution made in its text) whose Sentinel-2-like items point at per-band COGs on an HTTP server
with Range requests, ``labels/<item>.tif`` beside them, and an S3 store (moto) with ``my-bucket``.
``<!-- recipe: pretrained -->`` lays out ``my_scenes/`` and stands in for the hubs with the standard caches
filled as a download leaves them (random weights of the right shapes: smp's ImageNet resnet18 in the
Hugging Face cache, TorchGeo's SSL4EO-S12 resnet18 in the torch hub cache) and the network off
(``HF_HUB_OFFLINE=1``). The site itself is built by ``mkdocs build --strict`` in the last test (MkDocs
comes with ``pip install ".[dev]"``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!-- recipe(?:: (?P<setup>[\w-]+))? -->\n```bash\n(?P<body>.*?)^```", re.M | re.S)


def recipes() -> list[tuple[str, str | None, str]]:
    """(page:line, setup, script) of every marked block."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in MARK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match["setup"], match["body"]))
    return found


def lay_out_my_scenes(folder: Path, demo_root: Path) -> None:
    """``my_scenes/{train,val}/{images,labels}``: the demo scenes as a folder of the user's."""
    shutil.copytree(demo_root, folder, ignore=shutil.ignore_patterns("manifest.csv", ".geoseg-demo.json"))


def lay_out_s2_series(folder: Path) -> None:
    """``s2_series/{train,val}``: Sentinel-2-like tiles of several dates (4 and 3: a ragged series), each
    date's bands B02 B03 B04 B08 at 10 m and its SCL at 20 m with clouds, and one label per tile."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    size = 128
    for split, tile, dates in (("train", "T33TWM", ["20240605", "20240630", "20240720", "20240814"]),
                               ("val", "T33TWN", ["20240610", "20240705", "20240809"])):  # fmt: skip
        (folder / split / "labels").mkdir(parents=True)
        transform = from_origin(500000 + (split == "val") * 2000, 5100000, 10, 10)
        label = (np.arange(size)[None, :] * 3 // size + np.zeros((size, 1), int)).astype(np.uint8)
        profile = dict(
            driver="GTiff", height=size, width=size, count=1, crs="EPSG:32633", transform=transform
        )
        with rasterio.open(folder / split / "labels" / f"{tile}.tif", "w", dtype="uint8", **profile) as dst:
            dst.write(label, 1)
        for k, date in enumerate(dates):
            for band in ("B02", "B03", "B04", "B08"):
                values = (
                    800 + 400 * label.astype(np.int64) * (1 + (k % 2)) + rng.integers(0, 200, label.shape)
                )
                path = folder / split / f"{tile}_{date}_{band}.tif"
                with rasterio.open(path, "w", dtype="uint16", nodata=0, **profile) as dst:
                    dst.write(values.astype(np.uint16), 1)
            scl = np.full((size // 2, size // 2), 4, np.uint8)  # vegetation: clear
            scl[: 16 * (k + 1) % 48, :] = 9  # a cloud band, elsewhere on each date
            coarse = dict(
                profile, height=size // 2, width=size // 2, transform=transform * transform.scale(2)
            )
            with rasterio.open(
                folder / split / f"{tile}_{date}_SCL.tif", "w", dtype="uint8", **coarse
            ) as dst:
                dst.write(scl, 1)


def fill_weight_caches(folder: Path) -> dict[str, str]:
    """smp's resnet18 ImageNet weights in a Hugging Face cache and TorchGeo's SSL4EO-S12 resnet18 in a
    torch hub cache under ``folder``, laid out as downloads leave them; returns the environment to use."""
    import segmentation_models_pytorch as smp
    import timm
    import torch
    from safetensors.torch import save_file

    torchgeo_models = pytest.importorskip("torchgeo.models", reason="the recipe uses torchgeo: names")
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    repo = settings["repo_id"].replace("/", "--")
    snapshot = folder / "hf" / "hub" / f"models--{repo}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    state = {k: v for k, v in timm.create_model("resnet18").state_dict().items() if not k.startswith("fc.")}
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text('{"input_space": "RGB"}')
    weight = torchgeo_models.get_weight("ResNet18_Weights.SENTINEL2_ALL_MOCO")
    hub = folder / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(timm.create_model("resnet18", in_chans=13).state_dict(), hub / os.path.basename(weight.url))
    return {"HF_HOME": str(folder / "hf"), "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(folder / "torch")}


COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
S2_ASSETS = {"blue": ("B02", 1), "green": ("B03", 2), "red": ("B04", 3), "nir": ("B08", 4)}  # demo bands


def stac_item(scene: str, image: Path, cogs_url: str) -> dict:
    """A Sentinel-2 L2A-like STAC item of a demo scene: one COG asset per band, as Earth Search serves."""
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(image) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    assets = {
        key: {"href": f"{cogs_url}/{scene}/{key}.tif", "type": COG_TYPE, "roles": ["data"],
              "eo:bands": [{"name": band, "common_name": key}],
              "raster:bands": [{"nodata": 0, "data_type": "uint16"}]}
        for key, (band, _) in S2_ASSETS.items()
    }  # fmt: skip
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": scene, "collection": "sentinel-2-l2a",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": [west, south, east, north],
        "properties": {"datetime": "2024-07-15T10:00:00Z", "eo:cloud_cover": 5.0}, "links": [],
        "assets": assets,
    }  # fmt: skip


@contextlib.contextmanager
def stac_servers(folder: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The recipe's network on 127.0.0.1: yields (the STAC API's URL, environment for the S3 store)."""
    import rasterio

    from geoseg.data.demo import write_scene
    from servers.cog import write_cog
    from servers.range_http import RangeServer
    from servers.s3 import S3Server
    from servers.stac_api import StacApiServer

    src, cogs = folder / "src", folder / "cogs"
    (folder / "labels").mkdir()
    scenes = []
    for i in range(2):  # 640 px: the val region (the right 20 %) holds one 128-px chip across
        image, label = write_scene(src, "train", i, 640, seed=0)
        scene = f"S2B_33TWL_20240715_{i}_L2A"
        with rasterio.open(src / label) as lab:  # the config's classes: 1 water (the demo's 0), 0 other
            codes, profile = lab.read(1), lab.profile
        with rasterio.open(folder / "labels" / f"{scene}.tif", "w", **profile) as dst:
            dst.write(
                np.where(codes == 0, 1, np.where(codes == profile["nodata"], codes, 0)).astype(codes.dtype), 1
            )
        with rasterio.open(src / image) as whole:
            for key, (_, band) in S2_ASSETS.items():
                one = src / f"{scene}_{key}.tif"
                profile = {**whole.profile, "count": 1}
                with rasterio.open(one, "w", **profile) as dst:
                    dst.write(whole.read(band), 1)
                (cogs / scene).mkdir(parents=True, exist_ok=True)
                write_cog(one, cogs / scene / f"{key}.tif")
        scenes.append((scene, src / image))
    with RangeServer(cogs) as http, S3Server() as s3:
        s3.create_bucket("my-bucket")
        for key in S2_ASSETS:  # the scene to predict: the first item's bands
            s3.upload(cogs / scenes[0][0] / f"{key}.tif", "my-bucket", f"scenes/{key}.tif")
        items = [stac_item(scene, image, http.base_url) for scene, image in scenes]
        with StacApiServer(items) as api:
            yield api.url, s3.aws_environ()


def test_the_pages_hold_recipes():
    """The tour and your own data are the README's; the site's getting-started page includes them."""
    found = recipes()
    assert [(page.split(":")[0], setup) for page, setup, _ in found][:2] == [
        ("README.md", None), ("README.md", "my_scenes")]  # fmt: skip
    page = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert '--8<-- "README.md:tour"' in page and '--8<-- "README.md:own-data"' in page


@pytest.mark.parametrize(("where", "setup", "script"), recipes(), ids=[r[0] for r in recipes()])
def test_a_recipe_runs_as_written(where, setup, script, tmp_path, demo_root):
    if setup in ("my_scenes", "pretrained"):
        lay_out_my_scenes(tmp_path / "my_scenes", demo_root)
    if setup == "s2_series":
        lay_out_s2_series(tmp_path / "s2_series")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HYDRA_FULL_ERROR": "0"}  # fmt: skip
    with contextlib.ExitStack() as stack:
        if setup == "pretrained":
            env.update(fill_weight_caches(tmp_path / "caches"))
        if setup == "stac":
            api, aws = stack.enter_context(stac_servers(tmp_path))
            assert script.count("data=s2_stac ") >= 1, where
            script = script.replace("data=s2_stac ", f"data=s2_stac data.stac.api={api} ", 1)
            env.update(aws, NO_PROXY="127.0.0.1,localhost")
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, f"{where}: {done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"{where}: {done.stderr[-3000:]}"


def test_the_site_builds_without_a_warning(tmp_path):
    """``mkdocs build --strict``: a broken link, a missing page or an API name that moved fails it."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
