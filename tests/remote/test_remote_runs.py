"""End to end over the network (issue 37): ``geoseg train``, ``predict`` and ``evaluate`` read COGs from real
HTTP, HTTPS, S3 and STAC servers on 127.0.0.1 and give the class map and metrics of the same run on the local
files, byte for byte; faults injected between client and server are retried to the same result, or end in
one line, in bounded time, naming the URL without its query string, with no partial output left.

Every run is in-process (``geoseg.cli.main``), on the CPU, seeded: a 3-level U-Net trained for one epoch of
four steps on 32-px chips of the synthetic COG pair (left 70 % trains, right 30 % validates), predicted in
128-px tiles and scored. Between training and predict GDAL's network cache is cleared, so predict reads over
the network as a new process would.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import drop_hydra_log_handlers, run_cli
from servers.gdal import clear_vsicurl_cache
from servers.range_http import RangeServer
from servers.s3 import S3Server
from servers.stac_api import StacApiServer

pytestmark = pytest.mark.usefixtures("release_hydra_logging")  # in-process CLI runs (conftest.py)

CLASSES = "data.classes=[{code: 0, name: zero}, {code: 1, name: one}, {code: 2, name: two}]"
IMAGE, LABEL = "synthetic/image.tif", "synthetic/label.tif"
SECRET = "SECRET-5f3a9c"  # a signed URL's token: never printed, logged or written by geoseg
LOCAL = "127.0.0.1"


# ---------------------------------------------------------------------------------------------------------
# Running the commands


def train_args(tmp: Path, root: str | Path, *overrides: str, run: str = "run") -> list[str]:
    """``geoseg train`` of the synthetic pair under ``root`` (a folder or a URL prefix) into ``tmp/run``:
    the left 70 % trains, the right 30 % validates; one epoch of four steps on the CPU, seed 0."""
    return [
        "train", f"hydra.run.dir={tmp / run}", f"data.root={root}", "data.demo=null",
        f"data.cache_dir={tmp / 'cache'}", f"data.stats_path={tmp / 'stats.json'}",
        f"data.splits.train.images={IMAGE}", f"data.splits.train.labels={LABEL}",
        "data.splits.train.region=[0,0,0.7,1]", f"data.splits.val.images={IMAGE}",
        f"data.splits.val.labels={LABEL}", "data.splits.val.region=[0.7,0,1,1]", CLASSES,
        "data.chip_size=32", "data.batch_size=4", "data.chips_per_epoch=16", "data.num_workers=0",
        "data.val_stride=32", "encoder.depth=3", "model.decoder_channels=[16,8,8]", "trainer.max_epochs=1",
        "trainer.device=cpu", "trainer.progress=false", "trainer.tensorboard=false",
        "trainer.latest_link=null", "trainer.log_every=1", "seed=0", *overrides,
    ]  # fmt: skip


def predict_args(checkpoint: Path, image: str, output: Path, *overrides: str) -> list[str]:
    """``geoseg predict`` of one scene (a path or a URL, quoted for Hydra) on the CPU in 128-px tiles."""
    return ["predict", f"checkpoint={checkpoint}", f'input="{image}"', f"output={output}", "tile=128",
            "overlap=0", "device=cpu", "progress=false", *overrides]  # fmt: skip


def evaluate_args(prediction: Path, labels: str, output: Path) -> list[str]:
    """``geoseg evaluate`` of a class map against a label (a path or a URL, quoted for Hydra)."""
    return [
        "evaluate",
        f"prediction={prediction}",
        f'labels="{labels}"',
        f"output={output}",
        "progress=false",
    ]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``geoseg ARGS`` in-process: (exit status, stdout, stderr), Hydra's log handlers dropped after it."""
    try:
        return run_cli(capsys, *args)
    finally:
        drop_hydra_log_handlers()


def cli_ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``geoseg ARGS`` in-process, which must succeed; its stdout and stderr."""
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    return out + err


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str, float]:
    """``geoseg ARGS`` in-process, which must fail as a user error: exit status 2, exactly one stderr line,
    no traceback. Returns that line, all the output and the seconds it took."""
    start = time.monotonic()
    code, out, err = cli(capsys, *args)
    seconds = time.monotonic() - start
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err.strip(), out + err, seconds


@dataclass
class Outcome:
    """What a train, predict, evaluate chain produced."""

    classes: np.ndarray  # band 1 of the class map
    metrics: dict  # the metrics file, less the paths it names
    record: list[dict]  # every loss and score training logged, in order
    run: Path  # the training run's folder
    output: str  # everything the three commands printed


def read_classes(path: Path) -> np.ndarray:
    """Band 1 of a class map."""
    with rasterio.open(path) as src:
        return src.read(1)


def scores(path: Path) -> dict:
    """A metrics file without the paths it names (a local and a remote run name other files)."""
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in ("prediction", "labels")}


def training_record(run: Path) -> list[dict]:
    """The rows of the run's metrics.jsonl (losses, gradient norms, learning rates, validation scores) less
    the timings and memory: equal runs log equal ones."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speed = ("per_s", "seconds", "memory", "time")
    return [{k: v for k, v in row.items() if not any(word in k for word in speed)} for row in rows]


def chain(
    capsys: pytest.CaptureFixture[str], tmp: Path, root: str | Path, image: str, label: str, *train: str,
    between: Callable[[], None] | None = None, predict: tuple[str, ...] = (),
) -> Outcome:  # fmt: skip
    """Train on the pair under ``root``, predict ``image`` with the checkpoint and score it against ``label``
    (``between()`` runs after training, e.g. to inject faults for predict)."""
    output = cli_ok(capsys, *train_args(tmp, root, *train))
    clear_vsicurl_cache()  # predict reads over the network again, as another process would
    if between is not None:
        between()
    pred, metrics = tmp / "pred" / "classes.tif", tmp / "pred" / "metrics.json"
    output += cli_ok(capsys, *predict_args(tmp / "run" / "best.pt", image, pred, *predict))
    output += cli_ok(capsys, *evaluate_args(pred, label, metrics))
    return Outcome(read_classes(pred), scores(metrics), training_record(tmp / "run"), tmp / "run", output)


def assert_same(run: Outcome, local: Outcome) -> None:
    """The same class map, byte for byte, the same metrics and the same training record."""
    assert run.classes.dtype == local.classes.dtype and run.classes.shape == local.classes.shape
    assert np.array_equal(run.classes, local.classes)
    assert run.metrics == local.metrics
    assert run.record == local.record and run.record


def assert_only_local_clients(server: RangeServer | S3Server) -> None:
    """Every request the server logged came from 127.0.0.1 (and it logged some): no traffic left the host."""
    clients = {r.client for r in server.log()}
    assert clients == {LOCAL}, clients


def leftovers(folder: Path) -> list[str]:
    """Every file under ``folder`` (none if it does not exist), relative to it."""
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, cog_root: Path) -> Outcome:
    """The reference: the chain on the local COG files."""
    from geoseg.cli import main

    tmp = tmp_path_factory.mktemp("local")
    pred, metrics = tmp / "pred" / "classes.tif", tmp / "pred" / "metrics.json"
    try:
        main(train_args(tmp, cog_root))
        main(predict_args(tmp / "run" / "best.pt", str(cog_root / IMAGE), pred))
        main(evaluate_args(pred, str(cog_root / LABEL), metrics))
    finally:
        drop_hydra_log_handlers()
    return Outcome(read_classes(pred), scores(metrics), training_record(tmp / "run"), tmp / "run", "")


@pytest.fixture
def geoseg_retries(gdal_options: Callable[..., None]) -> None:
    """GDAL's retry count left to geoseg (``GDAL_HTTP_MAX_RETRY`` unset: configure_remote_reads sets 4),
    with the tests' short retry delay kept."""
    gdal_options(GDAL_HTTP_MAX_RETRY=None)


@pytest.fixture
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """geoseg's own pauses between the tries of a failed remote read (0.5, 1 and 2 s) cut tenfold, the
    number of tries kept (the mid-scene predict failure keeps the real ones, and their bound)."""
    monkeypatch.setattr("geoseg.data.remote.RETRY_DELAYS_S", (0.05, 0.1, 0.2))


@pytest.fixture(scope="module")
def warm_http(tmp_path_factory: pytest.TempPathFactory, _http_session: RangeServer) -> Path:
    """A folder whose ``cache/`` (scene index) and ``stats.json`` a clean run over http:// filled: a run
    given copies of them goes straight to reading chips, with no start-up read of the scene."""
    from geoseg.cli import main

    tmp = tmp_path_factory.mktemp("warm")
    try:
        main(train_args(tmp, _http_session.url().rstrip("/")))
    finally:
        drop_hydra_log_handlers()
        clear_vsicurl_cache()
    return tmp


def warmed(tmp_path: Path, warm: Path) -> None:
    """Copies of the warm scene index and statistics in ``tmp_path``, where :func:`train_args` finds them."""
    shutil.copytree(warm / "cache", tmp_path / "cache")
    shutil.copy2(warm / "stats.json", tmp_path / "stats.json")


# ---------------------------------------------------------------------------------------------------------
# The same run over every protocol


def test_http_run_is_the_local_run(capsys, tmp_path: Path, local: Outcome, http_server: RangeServer) -> None:
    """Train, predict and evaluate from http:// COGs (data.root a URL prefix): the local run's class map,
    metrics and training record; the COGs were read by range requests, never downloaded whole."""
    base = http_server.url().rstrip("/")
    run = chain(capsys, tmp_path, base, f"{base}/{IMAGE}", f"{base}/{LABEL}")
    assert_same(run, local)
    gets = [r for r in http_server.log(IMAGE) if r.method == "GET"]
    assert gets and all(r.status == 206 and r.range for r in gets)
    assert_only_local_clients(http_server)


def test_https_run_is_the_local_run(
    capsys, tmp_path: Path, local: Outcome, https_server: RangeServer
) -> None:
    """The same from https:// with the server's certificate verified."""
    base = https_server.url().rstrip("/")
    assert base.startswith("https://")
    assert_same(chain(capsys, tmp_path, base, f"{base}/{IMAGE}", f"{base}/{LABEL}"), local)
    assert https_server.log(IMAGE) and not https_server.errors
    assert_only_local_clients(https_server)


def test_s3_run_is_the_local_run(capsys, tmp_path: Path, local: Outcome, s3_server: S3Server) -> None:
    """The same from s3:// (the S3 API of a local moto server, signed requests)."""
    from servers.s3 import BUCKET

    base = f"s3://{BUCKET}"
    assert_same(chain(capsys, tmp_path, base, f"{base}/{IMAGE}", f"{base}/{LABEL}"), local)
    ranged = [r for r in s3_server.log(IMAGE) if r.method == "GET" and r.range]
    assert ranged and all("AWS4-HMAC-SHA256" in r.headers.get("Authorization", "") for r in ranged)
    assert_only_local_clients(s3_server)


def test_loader_workers_read_the_same_chips(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer
) -> None:
    """With two DataLoader worker processes (each with its reader threads) reading over http://, training
    sees the same chips: the local run's training record and, tensor for tensor, its weights (predict does
    not depend on the loader, so it is not run again)."""
    import torch

    cli_ok(capsys, *train_args(tmp_path, http_server.url().rstrip("/"), "data.num_workers=2"))
    assert training_record(tmp_path / "run") == local.record
    ours, theirs = (torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]
                    for run in (tmp_path / "run", local.run))  # fmt: skip
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert_only_local_clients(http_server)


# ---------------------------------------------------------------------------------------------------------
# STAC


def stac_item(image: str, label: str) -> dict:
    """A STAC item of the synthetic pair: assets ``image`` and ``label`` at these hrefs."""
    x0, y0, x1, y1 = 14.99, 45.07, 15.04, 45.11  # about where the synthetic grid lies (UTM 33N)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    cog = "image/tiff; application=geotiff; profile=cloud-optimized"
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": "synthetic", "collection": "test",
        "geometry": {"type": "Polygon", "coordinates": [ring]}, "bbox": [x0, y0, x1, y1],
        "properties": {"datetime": "2024-06-01T10:00:00Z"}, "links": [],
        "assets": {"image": {"href": image, "type": cog, "roles": ["data"]},
                   "label": {"href": label, "type": cog, "roles": ["labels"]}},
    }  # fmt: skip


@pytest.fixture(scope="module")
def item_collection(cog_root: Path) -> str:
    """A static ItemCollection ``stac/items.json`` beside the COGs (so served with them), asset hrefs
    relative to it; its path relative to the served folder."""
    path = cog_root / "stac" / "items.json"
    path.parent.mkdir(exist_ok=True)
    item = stac_item(f"../{IMAGE}", f"../{LABEL}")
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [item]}))
    return "stac/items.json"


STAC_TRAIN = ("data.files=[image]", "data.stac.label_asset=label", "data.splits.train.images=null",
              "data.splits.val.images=null", "data.splits.train.labels=null",
              "data.splits.val.labels=null")  # fmt: skip


def test_stac_item_collection_run_is_the_local_run(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer, item_collection: str
) -> None:
    """Scenes from a static STAC ItemCollection on the server (data.stac.source its URL, data.files the asset
    key, labels its label asset, split by region): the local run's class map and metrics; the items are
    frozen into the run folder, and predict of the asset's URL pattern uses the checkpoint's data.files."""
    base = http_server.url().rstrip("/")
    source = f"data.stac.source={base}/{item_collection}"
    run = chain(capsys, tmp_path, base, f"{base}/synthetic/{{file}}.tif", f"{base}/{LABEL}", source,
                *STAC_TRAIN)  # fmt: skip
    assert_same(run, local)
    for split in ("train", "val"):
        frozen = json.loads((run.run / f"stac-items-{split}.json").read_text())
        assert [f["assets"]["image"]["href"] for f in frozen["features"]] == [f"{base}/{IMAGE}"]
    assert http_server.log(item_collection)
    assert_only_local_clients(http_server)


@pytest.mark.slow  # the same scenes as the static source's, found by pystac-client: about 6 s more
def test_stac_api_search_run_is_the_local_run(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer
) -> None:
    """Scenes found by a STAC API search (pystac-client against a local API whose item's assets are on the
    COG server): the local run's class map and metrics."""
    base = http_server.url().rstrip("/")
    with StacApiServer([stac_item(f"{base}/{IMAGE}", f"{base}/{LABEL}")]) as api:
        run = chain(capsys, tmp_path, base, f"{base}/synthetic/{{file}}.tif", f"{base}/{LABEL}",
                    f"data.stac.api={api.url}", "data.stac.collections=[test]", *STAC_TRAIN)  # fmt: skip
        assert any(p.endswith("/search") for p in api.paths)
    assert_same(run, local)
    assert_only_local_clients(http_server)


# ---------------------------------------------------------------------------------------------------------
# Real scenes


@pytest.mark.slow  # two chains on a 13-band 512x512 scene: about 10 s
def test_sen1floods11_run_over_http_is_the_local_run(
    capsys, tmp_path: Path, cog_root: Path, sen1floods11_cogs: tuple[str, str], http_server: RangeServer
) -> None:
    """A real Sentinel-2 scene (13 bands, 256-px COG tiles; sen1floods11 from ../shared/data): trained,
    predicted and scored over http:// exactly as from the local COGs."""
    image, label = sen1floods11_cogs
    options = (f"data.splits.train.images={image}", f"data.splits.train.labels={label}",
               f"data.splits.val.images={image}", f"data.splits.val.labels={label}",
               "data.classes=[{code: 0, name: land}, {code: 1, name: water}]",
               "data.label_nodata=-1")  # fmt: skip
    base = http_server.url().rstrip("/")
    here = chain(capsys, tmp_path / "local", cog_root, str(cog_root / image), str(cog_root / label), *options)
    there = chain(capsys, tmp_path / "http", base, f"{base}/{image}", f"{base}/{label}", *options)
    assert_same(there, here)
    assert_only_local_clients(http_server)


# ---------------------------------------------------------------------------------------------------------
# Faults that pass


def test_latency_leaves_the_run_unchanged(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer
) -> None:
    """20 ms before every answer: the same class map and metrics."""
    http_server.latency_s = 0.02
    base = http_server.url().rstrip("/")
    assert_same(chain(capsys, tmp_path, base, f"{base}/{IMAGE}", f"{base}/{LABEL}"), local)


# (kind, how many, path, after how many GETs of that path): 503s, which GDAL retries, then a cut-off body
# and a dropped connection, which geoseg retries on a fresh handle (GDAL and curl retry some too). Each
# rule starts at the GET after the previous one's last: every fault makes the reader send another GET (a
# retry), so every rule fires, whatever order the reader threads' requests come in. The first GET of a file
# (its header, when it is opened) passes; for predict, the second too (its last block, checked at start-up).
TRAINING_FAULTS = [("503", 2, IMAGE, 1), ("truncate", 1, IMAGE, 3), ("drop", 1, IMAGE, 4),
                   ("truncate", 1, LABEL, 1), ("drop", 1, LABEL, 2)]  # fmt: skip
PREDICT_FAULTS = [("503", 2, IMAGE, 2), ("truncate", 1, IMAGE, 4), ("drop", 1, IMAGE, 5)]
# two reader threads, and no statistics check (its decimated read would fetch every block before the tiles)
PREDICT_THREADS = ("read_workers=2", "check_stats=false")


def add_faults(server: RangeServer, plan: list[tuple[str, int, str, int]]) -> list:
    """The fault rules of ``plan`` on GETs."""
    return [server.faults.add(kind, count=n, path_contains=path, methods=("GET",), skip=skip)
            for kind, n, path, skip in plan]  # fmt: skip


@pytest.mark.usefixtures("geoseg_retries", "short_pauses")
def test_transient_faults_are_retried_to_the_same_result(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer, warm_http: Path
) -> None:
    """503s, dropped connections and cut-off bodies on the chip reads of training (the scene index and the
    statistics of an earlier run are cached, so it goes straight to reading chips) and on predict's tile
    reads: both retry (GDAL for 503s, geoseg on a fresh handle for the rest) to the local run's result."""
    base = http_server.url().rstrip("/")
    warmed(tmp_path, warm_http)
    rules = add_faults(http_server, TRAINING_FAULTS)
    fired: list[int] = []

    def for_predict() -> None:
        fired.extend(r.fired for r in rules)
        rules[:] = add_faults(http_server, PREDICT_FAULTS)

    run = chain(capsys, tmp_path, base, f"{base}/{IMAGE}", f"{base}/{LABEL}", between=for_predict,
                predict=PREDICT_THREADS)  # fmt: skip
    assert fired == [n for _, n, _, _ in TRAINING_FAULTS]  # every fault happened, during training
    assert [r.fired for r in rules] == [n for _, n, _, _ in PREDICT_FAULTS]  # and during predict
    assert_same(run, local)
    assert_only_local_clients(http_server)


@pytest.mark.usefixtures("geoseg_retries", "short_pauses")
def test_a_body_cut_off_at_the_end_of_the_file_is_retried(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer
) -> None:
    """The last block of a COG (its full-resolution tiles come last; predict checks it at start-up) cut off
    twice: GDAL takes a short body that should reach the file's end for the end, in every handle, until it
    forgets the file; geoseg makes it forget between tries, so the third try reads it and the class map is the
    local run's."""
    base = http_server.url().rstrip("/")
    for skip in (1, 3):  # GETs: the header, the last block (cut), the header again, the last block (cut)...
        http_server.faults.add("truncate", count=1, path_contains=IMAGE, methods=("GET",), skip=skip)
    pred = tmp_path / "classes.tif"
    output = cli_ok(capsys, *predict_args(local.run / "best.pt", f"{base}/{IMAGE}", pred))
    cut = [r for r in http_server.log(IMAGE) if r.fault == "truncate"]
    size = (http_server.root / IMAGE).stat().st_size
    assert len(cut) == 2 and all(r.range and r.range.endswith(f"-{size - 1}") for r in cut)
    assert output.count(f"reading '{base}/{IMAGE}' failed") == 2  # geoseg's retries, not GDAL's
    assert np.array_equal(read_classes(pred), local.classes)


# ---------------------------------------------------------------------------------------------------------
# Faults that do not pass: one line, bounded time, nothing partial left


def assert_no_checkpoint(run: Path) -> None:
    """A failed first epoch leaves no checkpoint (nothing to predict from, nothing to resume)."""
    assert not (run / "best.pt").exists() and not (run / "last.pt").exists(), leftovers(run)


@pytest.mark.usefixtures("geoseg_retries", "short_pauses")
def test_training_that_keeps_failing_mid_run_stops_in_one_line(
    capsys, tmp_path: Path, http_server: RangeServer, warm_http: Path
) -> None:
    """Every block read of the image answered 503 once training reads chips (the scene index and statistics
    of an earlier run are cached): each read is retried a bounded number of times (GDAL's retries of the
    503s inside each of geoseg's, several reader threads waiting on one download), then training stops with
    one line naming the URL, the window and the cause, and writes no checkpoint."""
    base = http_server.url().rstrip("/")
    warmed(tmp_path, warm_http)
    http_server.faults.add("503", count=None, path_contains=IMAGE, methods=("GET",), skip=1)  # header passes
    line, _, seconds = cli_error(capsys, *train_args(tmp_path, base))
    assert line.startswith("geoseg: error: cannot read window Window(")
    assert f"of '{base}/{IMAGE}' after 4 tries (HTTP 503, service unavailable after retries)" in line
    assert seconds < 60
    assert_no_checkpoint(tmp_path / "run")
    assert_only_local_clients(http_server)


@pytest.mark.usefixtures("geoseg_retries")
def test_predict_that_keeps_failing_mid_scene_stops_in_one_line(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer
) -> None:
    """Every image read fails from the last read of a clean predict on (a strip of tiles: one reader thread,
    no statistics check, whose decimated read would fetch every block first), so after the first tiles were
    written: predict retries, stops with one line naming the URL, and leaves no output, no temporary file."""
    base = http_server.url().rstrip("/")
    args = (local.run / "best.pt", f"{base}/{IMAGE}")
    options = ("read_workers=1", "check_stats=false")
    cli_ok(capsys, *predict_args(*args, tmp_path / "clean" / "classes.tif", *options))
    gets = [r for r in http_server.log(IMAGE) if r.method == "GET"]
    assert len(gets) >= 4  # the header, the last block (checked at start-up), then strips of tiles
    clear_vsicurl_cache()
    http_server.reset()
    http_server.faults.add("truncate", count=None, path_contains=IMAGE, methods=("GET",), skip=len(gets) - 1)
    out = tmp_path / "pred"
    line, _, seconds = cli_error(
        capsys, *predict_args(*args, out / "classes.tif", *options, "probabilities=true")
    )
    assert line.startswith("geoseg: error: cannot read window Window(")
    assert f"of '{base}/{IMAGE}' after 4 tries (a block could not be read" in line
    assert http_server.faults.fired and seconds < 60
    assert leftovers(out) == []


# Files that keep a signed URL as it was given: the run's record of its options (Hydra's .hydra/ folder,
# written before geoseg starts, and the config saved in each checkpoint, read by resume and predict) and the
# scene index in data.cache_dir, which reopens the scenes by it. Nothing else written, printed or logged
# holds the token.
KEEP_THE_URL = ["cache/scene-index.json", "run/.hydra/config.yaml", "run/.hydra/hydra.yaml",
                "run/.hydra/overrides.yaml", "run/best.pt", "run/last.pt"]  # fmt: skip


def holding_the_secret(folder: Path) -> list[str]:
    """The files under ``folder`` that hold :data:`SECRET`, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                  and SECRET.encode() in p.read_bytes())  # fmt: skip


@pytest.mark.usefixtures("geoseg_retries")
def test_signed_url_runs_and_its_token_is_never_shown(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer
) -> None:
    """Image and label given as signed URLs (``?token=...``): the chain gives the local run's results; no
    line it printed or logged holds the token (GDAL's warnings about the 503s it retried on the way name the
    URL, without it), nor does any file it wrote but the records of the options as given."""
    base = http_server.url().rstrip("/")
    image, label = f"{base}/{IMAGE}?token={SECRET}", f"{base}/{LABEL}?token={SECRET}"
    http_server.faults.add("503", count=2, path_contains=IMAGE, methods=("GET",), skip=1)
    run = chain(capsys, tmp_path, "unused", image, label, f'data.splits.train.images="{image}"',
                f'data.splits.train.labels="{label}"', f'data.splits.val.images="{image}"',
                f'data.splits.val.labels="{label}"')  # fmt: skip
    assert_same(run, local)
    assert http_server.faults.fired and "HTTP error code: 503" in run.output
    assert f"{base}/{IMAGE}?…" in run.output and SECRET not in run.output
    assert SECRET not in (run.run / "train.log").read_text()
    assert holding_the_secret(tmp_path) == KEEP_THE_URL
    assert all(r.path.endswith(f"?token={SECRET}") for r in http_server.log(IMAGE))  # it was sent


def test_a_signed_url_left_unquoted_is_refused_without_its_token(capsys, tmp_path: Path) -> None:
    """A signed URL typed without quotes is a malformed override (its ``=`` ends the value): the one line
    says so, with the URL but not its token."""
    url = f"https://127.0.0.1:9/{IMAGE}?token={SECRET}"
    line, output, _ = cli_error(capsys, *train_args(tmp_path, "unused", f"data.splits.train.images={url}"))
    assert line.startswith("geoseg: error: malformed override 'data.splits.train.images=https://127.0.0.1:9/")
    assert f"{IMAGE}?…'" in line and SECRET not in output


def test_gdal_messages_lose_a_token_after_a_url_or_a_file_name(caplog: pytest.LogCaptureFixture) -> None:
    """GDAL's messages reach the log through rasterio's loggers naming the URL, or the file name with its
    query string (an IReadBlock failure): once remote reads are configured, both are logged without it."""
    import logging

    from geoseg.data.remote import configure_remote_reads

    configure_remote_reads()
    caplog.set_level(logging.WARNING)
    url = f"https://u:pw@h.test/a.tif?sig={SECRET}"
    logging.getLogger("rasterio._env").warning("HTTP error code: 503 - %s. Retrying again in 0.5 secs", url)
    logging.getLogger("rasterio._err").error("msg='a.tif?sig=%s, band 1: IReadBlock failed'", SECRET)
    assert "https://h.test/a.tif?…" in caplog.text and "a.tif?… band 1" in caplog.text
    assert SECRET not in caplog.text and "pw" not in caplog.text


@pytest.mark.usefixtures("geoseg_retries")
@pytest.mark.parametrize("command", ["train", "predict", "evaluate"])
def test_a_server_that_keeps_answering_503_ends_each_command_in_one_line(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer, command: str
) -> None:
    """Every request for the image (train, predict) or the label (evaluate) of a signed URL answered 503:
    GDAL's retries run out, and the command ends in one line naming the URL without its token and the cause,
    in bounded time, with no checkpoint or output left."""
    base = http_server.url().rstrip("/")
    target = LABEL if command == "evaluate" else IMAGE
    url = f"{base}/{target}?token={SECRET}"
    http_server.faults.fail_always(target, 503)
    out = tmp_path / "pred"
    args = {
        "train": train_args(tmp_path, base, f'data.splits.train.images="{url}"'),
        "predict": predict_args(local.run / "best.pt", url, out / "classes.tif"),
        "evaluate": evaluate_args(local.run.parent / "pred" / "classes.tif", url, out / "metrics.json"),
    }[command]
    line, output, seconds = cli_error(capsys, *args)
    assert f"'{base}/{target}?…'" in line and "(HTTP 503, service unavailable after retries)" in line
    assert SECRET not in output and seconds < 30
    assert leftovers(out) == []
    if command == "train":
        assert_no_checkpoint(tmp_path / "run")
        assert "train.log" in leftovers(tmp_path / "run")
        assert holding_the_secret(tmp_path) == ["run/.hydra/config.yaml", "run/.hydra/hydra.yaml",
                                                "run/.hydra/overrides.yaml"]  # fmt: skip
    assert http_server.count(status=503) >= 5  # GDAL tried again: 4 retries after the first answer


@pytest.mark.slow  # GDAL's own delays between retries: about 11 s
def test_with_geoseg_retry_defaults_a_dead_server_ends_the_run_in_bounded_time(
    capsys, tmp_path: Path, http_server: RangeServer, gdal_options: Callable[..., None]
) -> None:
    """With geoseg's own retry options (GDAL_HTTP_MAX_RETRY=4, GDAL_HTTP_RETRY_DELAY=0.5 s, growing), a server
    that answers 503 forever ends training in one line after GDAL's retries, well within a minute."""
    gdal_options(GDAL_HTTP_MAX_RETRY=None, GDAL_HTTP_RETRY_DELAY=None)
    http_server.faults.fail_always(IMAGE, 503)
    line, _, seconds = cli_error(capsys, *train_args(tmp_path, http_server.url().rstrip("/")))
    assert "(HTTP 503, service unavailable after retries)" in line
    assert http_server.count(status=503) == 5 and 3 < seconds < 60  # 4 retries, 0.5 s growing delays
    assert_no_checkpoint(tmp_path / "run")


@pytest.mark.parametrize(("status", "cause"), [
    ("404", "HTTP 404, not found: check the URL"),
    ("403", "HTTP 403, access denied: check the store's credentials"),
])  # fmt: skip
@pytest.mark.parametrize("command", ["train", "predict", "evaluate"])
def test_missing_and_forbidden_urls_are_one_line_with_the_cause(
    capsys, tmp_path: Path, local: Outcome, http_server: RangeServer, status: str, cause: str, command: str
) -> None:
    """A URL that is not there (404) or not allowed (403, credentials): one line naming the URL and the cause,
    at once (a 4xx is not retried), and no output."""
    base = http_server.url().rstrip("/")
    target = "synthetic/missing.tif" if status == "404" else IMAGE
    if status == "403":
        http_server.faults.fail_always(IMAGE, 403)
    url = f"{base}/{target}"
    out = tmp_path / "pred"
    args = {
        "train": train_args(tmp_path, base, f"data.splits.train.images={target}"),
        "predict": predict_args(local.run / "best.pt", url, out / "classes.tif"),
        "evaluate": evaluate_args(local.run.parent / "pred" / "classes.tif", url, out / "metrics.json"),
    }[command]
    line, _, seconds = cli_error(capsys, *args)
    assert f"'{url}' ({cause}" in line and seconds < 10
    assert leftovers(out) == []
    assert_only_local_clients(http_server)


@pytest.mark.parametrize(("url", "command"), [
    ("s3://geoseg-no-such-bucket/synthetic/image.tif", "train"),
    ("s3://geoseg-test/synthetic/missing.tif", "train"),
    ("s3://geoseg-test/synthetic/missing.tif", "predict"),
])  # fmt: skip
def test_s3_missing_bucket_or_key_is_one_line(
    capsys, tmp_path: Path, local: Outcome, s3_server: S3Server, url: str, command: str
) -> None:
    """An s3:// URL whose bucket or key does not exist: one line naming it, and no output."""
    out = tmp_path / "pred"
    bucket, key = url.removeprefix("s3://").split("/", 1)
    args = {
        "train": train_args(tmp_path, f"s3://{bucket}", f"data.splits.train.images={key}"),
        "predict": predict_args(local.run / "best.pt", url, out / "classes.tif"),
    }[command]
    line, _, seconds = cli_error(capsys, *args)
    assert f"'{url}' (" in line and seconds < 10, line
    assert "does not exist)" in line or "(HTTP 404, not found" in line, line
    assert leftovers(out) == []
    assert_only_local_clients(s3_server)
