"""Property: no command writes over a file it did not produce (issue #35, class 1).

Every command that writes is run with each of its output paths (``output=``, ``hydra.run.dir``,
``data.stats_path``, ``data.cache_dir``, ``demo-data root=``, ``init-data conf=``) pointed at each kind
of existing thing -- its own input, a label, a checkpoint, a raster and a vector of the user's, a
folder of the user's, folders named like files -- with ``existing=error`` and ``existing=overwrite``.
Afterwards every file that existed before is byte-identical: none of them is a file geoseg wrote of
the kind the command writes, so not even ``existing=overwrite`` may replace it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra

from conftest import drop_hydra_log_handlers, run_cli, save_tiny_checkpoint, tiny_run, write_tif
from geoseg.cli import main

pytestmark = pytest.mark.usefixtures("release_hydra_logging")


@dataclass
class World:
    """A user's files: scenes, a checkpoint, a prediction, a sweep and things of their own."""

    root: Path
    data: Path
    image: Path
    label: Path
    checkpoint: Path
    prediction: Path
    sweep: Path
    targets: dict[str, Path]
    files: dict[str, str]  # every file the user had before any command ran, and its SHA-256


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_root) -> World:
    root = tmp_path_factory.mktemp("world")
    data = root / "data"
    shutil.copytree(demo_root, data, ignore=shutil.ignore_patterns("manifest.csv", ".geoseg-demo.json"))
    image, label = data / "train/images/scene_00.tif", data / "train/labels/scene_01.tif"
    checkpoint = save_tiny_checkpoint(root / "runs/best.pt", image, classes=4)
    prediction = root / "preds/scene_04.tif"
    scene = data / "val/images/scene_04.tif"
    main(["predict", f"checkpoint={checkpoint}", f"input={scene}", f"output={prediction}"])
    drop_hydra_log_handlers()
    sweep = root / "sweep"
    job = sweep / "norm=groupnorm/seed=0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra/overrides.yaml").write_text("- norm=groupnorm\n- seed=0\n")
    (job / "summary.json").write_text(json.dumps({"val": {"miou": 0.5}, "best_miou": 0.5, "seed": 0}))
    mine = root / "mine"
    mine.mkdir()
    raster = write_tif(mine / "ortho.tif", np.ones((3, 16, 16), np.uint16))
    vector = mine / "fields.geojson"
    point = {"type": "Point", "coordinates": [500010, 4999990]}
    feature = {"type": "Feature", "properties": {"cls": 1}, "geometry": point}
    vector.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    folder = mine / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    targets = {"label": label, "checkpoint": checkpoint, "raster": raster, "vector": vector, "folder": folder}
    for name in ("looks_like.tif", "looks_like.json", "looks_like.pt"):
        (mine / name).mkdir()
        (mine / name / "readme.txt").write_text("a folder, though named like a file")
        targets[f"folder {name}"] = mine / name
    return World(root, data, image, label, checkpoint, prediction, sweep, targets, snapshot(root))


def data_args(w: World) -> list[str]:
    return [f"data.root={w.data}", "data.demo=null", "data.num_workers=0", "progress=false"]


def train_args(w: World, *extra: str) -> list[str]:
    run = w.root / "runs" / f"fresh-{len(list((w.root / 'runs').iterdir()))}"
    quick = [
        "trainer.max_steps=1",
        "trainer.diagnostics.train_max_chips=0",
        "trainer.diagnostics.bn_statistics=false",
    ]
    return [*tiny_run(w.data, f"hydra.run.dir={run}", *quick), *extra]


def command_args(command: str, w: World, target: Path) -> list[str]:
    """The command line of ``command`` (``"stats output="``) with that output path set to ``target``."""
    name, option = command.split()
    set_target = f"{option}{target}"
    scene4 = f"{w.data}/val/labels/scene_04.tif"
    return {
        "stats": ["stats", *data_args(w), set_target],
        "index": ["index", *data_args(w), set_target],
        "evaluate": [
            "evaluate",
            f"prediction={w.prediction}",
            f"labels={scene4}",
            set_target,
            "progress=false",
        ],
        "export": ["export", f"checkpoint={w.checkpoint}", set_target],
        "predict": [
            "predict",
            f"checkpoint={w.checkpoint}",
            f"input={w.image}",
            set_target,
            "check_stats=false",
            "progress=false",
        ],
        "convert": ["convert", f"input={w.image}", set_target, "progress=false"],
        "report": ["report", str(w.sweep), set_target],
        "demo-data": ["demo-data", set_target, "size=64"],
        "init-data": ["init-data", str(w.data), set_target],
        "train": [
            "train",
            *(tiny_run(w.data, set_target) if option == "hydra.run.dir=" else train_args(w, set_target)),
        ],
    }[name]


def own_input(command: str, w: World) -> Path:
    """The file or folder ``command`` reads."""
    name = command.split()[0]
    return {"evaluate": w.prediction, "export": w.checkpoint, "report": w.sweep, "demo-data": w.data,
            "init-data": w.data}.get(name, w.image)  # fmt: skip


COMMANDS = [
    "stats output=", "stats data.stats_path=", "stats data.cache_dir=", "index data.cache_dir=",
    "evaluate output=", "export output=", "predict output=", "convert output=", "report output=",
    "demo-data root=", "init-data conf=", "train hydra.run.dir=", "train data.stats_path=",
    "train data.cache_dir=",
]  # fmt: skip
TARGETS = ["own input", "label", "checkpoint", "raster", "vector", "folder", "folder looks_like.tif",
           "folder looks_like.json", "folder looks_like.pt"]  # fmt: skip
NO_EXISTING = ("train", "index")  # commands whose outputs are run files or caches, with no existing= option


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (run folders of fresh runs aside) and the SHA-256 of its bytes.

    Files a command writes anew (a cache in a folder of the user's) are geoseg's: later commands may
    update them, so each run is compared with the world as the user made it."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "fresh-" not in str(p)
    }


def run_command(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    """``geoseg ARGS`` in-process, Hydra's log handlers dropped after it: (exit status, stderr)."""
    try:
        code, _, err = run_cli(capsys, *args)
    finally:
        drop_hydra_log_handlers()
    assert not GlobalHydra.instance().is_initialized()
    return code, err


# how each command is told to replace what exists: stats, evaluate, export and report replace a file of
# their kind by default; demo-data and init-data also take geoseg 0.1's overwrite=true
OVERWRITE = {"predict": ["existing=overwrite"], "convert": ["existing=overwrite"],
             "demo-data": ["overwrite=true"], "init-data": ["overwrite=true"]}  # fmt: skip


@pytest.mark.parametrize("existing", ["overwrite", pytest.param("error", marks=pytest.mark.slow)])
@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_writes_over_a_file_it_did_not_produce(world, command, existing, capsys):
    """Told to overwrite (the stronger case: an existing file alone does not stop the command), each
    in the words it has understood since geoseg 0.1; ``existing=error`` runs with ``-m slow``. Train and
    index, whose outputs are run files and caches, have no ``existing=`` option and run once."""
    name = command.split()[0]
    if name in NO_EXISTING and existing != "overwrite":
        pytest.skip("train and index have no existing= option: run once, in the overwrite case")
    extra = OVERWRITE.get(name, []) if existing == "overwrite" else [f"existing={existing}"]
    for target_name in TARGETS:
        target = own_input(command, world) if target_name == "own input" else world.targets[target_name]
        code, err = run_command(capsys, [*command_args(command, world, target), *extra])
        after = snapshot(world.root)
        changed = [p for p, digest in world.files.items() if after.get(p) != digest]
        assert not changed, f"{command}{target} {extra}: replaced or deleted {changed} (exit {code}): {err}"
        assert "Traceback" not in err, f"{command}{target} {extra}: {err}"
        if code:
            assert code == 2 and len(err.strip().splitlines()) == 1, f"{command}{target} {extra}: {err}"
