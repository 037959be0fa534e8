"""Random chips/s over HTTP at 0, 20 and 100 ms latency, against local disk and against TorchGeo.

The same COGs are read from local disk and from a :class:`RangeServer` (``tests/servers/range_http.py``)
on 127.0.0.1 in this process, whose ``latency_s`` (a sleep before every answer) stands for the network.
Every reader gets the same files, the same number of chips, batches of ``--batch`` and the same number of
DataLoader workers (``data.num_workers: auto``: this machine's cores but one), in one run:

- ``geoseg``: what ``geoseg train`` builds (``inspect_scene`` on the URLs, ``ChipDataset``, the
  ``random_sampler`` of ``build_split`` and ``make_loader``) with the default data options: reads of
  remote scenes get ``data.reads_in_flight: auto`` threads per worker and ``REMOTE_GDAL_OPTIONS``;
- ``geoseg, 1 read in flight``: the same with ``data.reads_in_flight=1`` (what the threads buy);
- ``TorchGeo``: ``RasterDataset(image) & RasterDataset(label, is_image=False)`` over the same URLs (or
  local paths), ``RandomGeoSampler`` of the same chip size in pixels, ``stack_samples``, GDAL defaults;
- ``TorchGeo + geoseg GDAL options``: the same with ``REMOTE_GDAL_OPTIONS`` set, at the highest latency
  (what the options alone buy; ``--no-tuned-torchgeo`` leaves it out).

Rasteret is not here: every release needs Python >= 3.12 (this project supports 3.11).

The data: ``--scenes`` COGs of ``--side``² px made from the real 13-band int16 Sentinel-2 chip of
Sen1Floods11 (``../shared/data/sen1floods11``, 512² px) and its label, mirror-tiled (``np.pad`` mode
``symmetric``, each scene a different rotation/flip of the chip) and placed side by side on a UTM 10 m
grid; written with GDAL's COG driver (``tests/servers/cog.py``: 256-px tiles, DEFLATE, overviews) and
cached under ``--scratch``. Several scenes spread the reads over files, and their size keeps the share of
tiles a pass reads twice small (printed: a re-read tile comes from GDAL's caches in every reader).

Before each configuration GDAL's /vsicurl/ cache is cleared (``tests/servers/gdal.py``) and a fresh
DataLoader worker starts, so no reader starts with cached blocks; the first ``--warmup`` batches (worker
start, opening files) are not timed. Each cell is the median of ``--repeats`` passes, interleaved.
``requests/chip`` and ``kB/chip`` come from the server's request log: every request of the pass (the
warm-up and the opening of files included) over every chip read.

    python scripts/bench_remote.py --output outputs/bench_remote.md
    python scripts/bench_remote.py --quick                     # a smoke run, about a minute
    python scripts/bench_remote.py --latency-ms 100 --no-torchgeo --variant GDAL_HTTP_MULTIRANGE=SINGLE_GET \
        --variant num_workers=2          # an option or a data setting against the defaults, in one run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch.utils.data import DataLoader

from geoseg.data.build import random_sampler
from geoseg.data.dataset import ChipDataset
from geoseg.data.labels import ClassMap
from geoseg.data.loader import make_loader, num_workers, reads_in_flight
from geoseg.data.remote import REMOTE_GDAL_OPTIONS, is_remote
from geoseg.data.samplers import RandomChipSampler
from geoseg.data.scenes import Scene, inspect_scene
from geoseg.io import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
S2_CHIP = SHARED / "sen1floods11" / "Spain_7370579_S2Hand.tif"
S2_LABEL = SHARED / "sen1floods11" / "Spain_7370579_LabelHand.tif"
CODES = (0, 1)  # not water, water; -1 is the label's undeclared nodata
LABEL_NODATA = -1
CRS = "EPSG:32630"  # UTM 30N (Spain), 10 m: the grid of a real Sentinel-2 COG
PIXEL_M = 10.0
# TorchGeo opens every file in the main process to index it. At GDAL's defaults such an open of a URL
# served by this process never returns (seen: it waits with the GIL held, so the server's Python threads
# cannot answer; GDAL lists the folder and probes for sidecar files then). With the listing off
# (EMPTY_DIR) it returns, so the index is built that way, every other option at its default. The timed
# reads run in the DataLoader worker, another process, at GDAL's defaults.
TORCHGEO_CONSTRUCTION: dict[str, str | None] = {
    **dict.fromkeys(REMOTE_GDAL_OPTIONS),
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}


def load_server_module(name: str) -> ModuleType:
    """``tests/servers/<name>.py``, imported by path (registered in ``sys.modules`` for its dataclasses)."""
    key = f"bench_servers_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, REPO / "tests" / "servers" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------
# Data


def _variant(arr: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th of the 8 rotations/flips of a (C, H, W) square array."""
    out = np.rot90(arr, k % 4, axes=(1, 2))
    return out.transpose(0, 2, 1) if (k // 4) % 2 else out


def _write_scene(job: tuple[int, int, str]) -> None:
    """Write scene ``k`` (image and label COGs of ``side``² px) into ``folder``; run in a spawned process,
    so GDAL's thread pool (used to write) never lives in the process that forks DataLoader workers."""
    k, side, folder = job
    cog = load_server_module("cog")
    with rasterio.open(S2_CHIP) as src:
        image, nodata = src.read(), src.nodata
    with rasterio.open(S2_LABEL) as src:
        label = src.read()
    x0 = 300_000 + k * (side + 512) * PIXEL_M  # side by side with a gap: no two scenes overlap
    profile = {"driver": "GTiff", "crs": CRS, "transform": from_origin(x0, 4_500_000, PIXEL_M, PIXEL_M),
               "width": side, "height": side, "tiled": True, "blockxsize": 512,
               "blockysize": 512}  # fmt: skip
    pad = ((0, 0), (0, side - image.shape[1]), (0, side - image.shape[2]))
    with tempfile.TemporaryDirectory(dir=folder) as tmp, rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        for name, arr, nd in (("s2", image, nodata), ("label", label, None)):
            plain = Path(tmp) / f"{name}.tif"
            big = np.pad(_variant(arr, k), pad, mode="symmetric")
            with rasterio.open(plain, "w", count=big.shape[0], dtype=big.dtype, nodata=nd, **profile) as dst:
                dst.write(big)
            del big
            cog.write_cog(plain, Path(folder) / f"{name}_{k}.tif", blocksize=256)


def make_scenes(scratch: Path, count: int, side: int) -> Path:
    """The folder of ``count`` scene pairs (``s2_<k>.tif``, ``label_<k>.tif``), written once and reused."""
    folder = scratch / f"s2_mosaic_{count}x{side}"
    marker = folder / "done.json"
    if marker.exists():
        return folder
    for missing in (S2_CHIP, S2_LABEL):
        if not missing.exists():
            sys.exit(f"bench_remote: {missing} is missing; the benchmark needs ../shared/data (README).")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(min(count, os.cpu_count() or 1)) as pool:
        pool.map(_write_scene, [(k, side, str(folder)) for k in range(count)])
    atomic_write_text(marker, json.dumps({"scenes": count, "side": side, "source": str(S2_CHIP)}) + "\n")
    print(f"# wrote {count} scenes of {side}² px in {time.perf_counter() - start:.0f} s under {folder}",
          file=sys.stderr)  # fmt: skip
    return folder


# ---------------------------------------------------------------------------------------------------------
# Passes


@dataclass
class Result:
    """Repeated measurements of one configuration."""

    rates: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)  # per chip
    kbytes: list[float] = field(default_factory=list)  # per chip


def timed(batches: Iterable[dict], warmup: int) -> tuple[float, int]:
    """(chips/s after the first ``warmup`` batches, chips read in all)."""
    it = iter(batches)
    total = 0
    for _ in range(warmup):
        total += len(next(it)["image"])
    start, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch["image"])
    return n / (time.perf_counter() - start), total + n


@contextlib.contextmanager
def gdal_options(options: Mapping[str, str | None]) -> Iterator[None]:
    """GDAL config options for the block (``None``: unset), in this process and so in forked workers."""
    gdal = load_server_module("gdal")
    with gdal.gdal_config(options):
        yield


def data_config(chip: int, batch: int, chips: int, in_flight: int | str) -> dict[str, Any]:
    """The data options of a training run (configs/data defaults) for this benchmark."""
    return {"chip_size": chip, "batch_size": batch, "chips_per_epoch": chips, "max_nodata_fraction": 0.5,
            "num_workers": "auto", "reads_in_flight": in_flight, "read_threads": "auto",
            "chips_per_block": "auto", "align_chips": False, "index": False,
            "persistent_workers": False}  # fmt: skip


def geoseg_loader(scenes: list[Scene], sampler: RandomChipSampler, cfg: Mapping[str, Any]) -> DataLoader:
    """The training DataLoader as ``build_split`` makes it (``make_loader``, last partial batch dropped)."""
    remote = any(is_remote(p) for s in scenes for p in (s.image, s.label) if p)
    dataset = ChipDataset(
        scenes, int(cfg["chip_size"]), ClassMap(list(CODES)), fill=[0.0] * len(scenes[0].bands),
        reads_in_flight=reads_in_flight(cfg, remote),
    )  # fmt: skip
    return make_loader(dataset, sampler, cfg, drop_last=True)


def torchgeo_dataset(images: list[str], labels: list[str]) -> Any:
    """``RasterDataset`` of the images ``&`` one of the labels (``is_image=False``), paths or URLs."""
    from torchgeo.datasets import RasterDataset

    image_cls = type("BenchS2", (RasterDataset,), {"filename_glob": "s2_*.tif", "is_image": True})
    label_cls = type("BenchLabel", (RasterDataset,), {"filename_glob": "label_*.tif", "is_image": False})
    return image_cls(paths=images) & label_cls(paths=labels)


def torchgeo_loader(dataset: Any, chip: int, batch: int, chips: int, workers: int) -> DataLoader:
    """Random chips of ``chip`` px (``RandomGeoSampler``, seeded) with ``stack_samples``."""
    from torchgeo.datasets import stack_samples
    from torchgeo.samplers import RandomGeoSampler

    sampler = RandomGeoSampler(dataset, size=chip, length=chips, generator=torch.Generator().manual_seed(0))
    extra = {"prefetch_factor": 2} if workers else {}
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                      collate_fn=stack_samples, **extra)  # fmt: skip


def run_pass(make: Callable[[], DataLoader], warmup: int, server: Any, result: Result) -> None:
    """One pass: GDAL's network cache cleared, a fresh loader (and worker), chips/s and the requests."""
    load_server_module("gdal").clear_vsicurl_cache()
    before = len(server.log())
    loader = make()
    rate, chips = timed(loader, warmup)
    del loader
    log = server.log()[before:]
    result.rates.append(rate)
    result.requests.append(len(log) / chips)
    result.kbytes.append(sum(r.body_bytes for r in log) / chips / 1000)


def tiles_read_twice(sampler: RandomChipSampler, chip: int, tile: int = 256) -> float:
    """Share of the (scene, tile) reads of a pass that an earlier chip of the pass already read."""
    seen: set[tuple[int, int, int]] = set()
    reads = again = 0
    for c in sampler:
        for r in range(c.row // tile, (c.row + chip - 1) // tile + 1):
            for q in range(c.col // tile, (c.col + chip - 1) // tile + 1):
                reads += 1
                again += (c.scene, r, q) in seen
                seen.add((c.scene, r, q))
    return again / reads


def machine_line() -> str:
    """Cores, load average (another job may share the machine) and versions."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    load = uptime.split("load average:")[-1].strip() if "load average" in uptime else "?"
    try:
        import torchgeo

        tg = f"torchgeo {torchgeo.__version__}"
    except ImportError:
        tg = "torchgeo not installed"
    return (f"nproc {os.cpu_count()} | load average {load} | Python {platform.python_version()} | "
            f"torch {torch.__version__} | {tg} | rasterio {rasterio.__version__} | "
            f"GDAL {rasterio.__gdal_version__}")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Main


# one pass: (latency in ms or None for local disk, row name, the loader's maker, GDAL options for it)
Job = tuple[float | None, str, Callable[[], DataLoader], Mapping[str, str | None]]


@dataclass
class Setup:
    """What every pass of one chip size reads: geoseg's scenes (local and remote), its chips, TorchGeo."""

    local: list[Scene]
    remote: list[Scene]
    sampler: RandomChipSampler
    torchgeo_local: Any = None
    torchgeo_remote: Any = None


def parse_options(values: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            sys.exit(f"bench_remote: options are KEY=VALUE, got {value!r}")
        out[key] = val
    return out


def geoseg_rows(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(row name, data options, GDAL options) of every remote geoseg row."""
    extra_gdal = parse_options(args.gdal)
    rows: list[tuple[str, dict[str, Any], dict[str, str]]] = [("geoseg", {}, extra_gdal)]
    if not args.no_rif1:
        rows.append(("geoseg, 1 read in flight", {"reads_in_flight": 1}, extra_gdal))
    for variant in args.variant:  # KEY=VALUE: upper case a GDAL option, lower case a data option
        pairs = parse_options(variant.split(","))
        data = {k: int(v) if v.isdigit() else v for k, v in pairs.items() if not k.isupper()}
        gdal = {**extra_gdal, **{k: v for k, v in pairs.items() if k.isupper()}}
        rows.append((f"geoseg, {variant}", data, gdal))
    return rows


def jobs_for(chip: int, setup: Setup, args: argparse.Namespace, chips: int, workers: int) -> list[Job]:
    """Every pass of one chip size in one repeat: local disk first, then each latency."""
    base = data_config(chip, args.batch, chips, "auto")

    def geoseg(scenes: list[Scene], options: Mapping[str, Any]) -> Callable[[], DataLoader]:
        return lambda: geoseg_loader(scenes, setup.sampler, {**base, **options})

    def torchgeo(dataset: Any) -> Callable[[], DataLoader]:
        return lambda: torchgeo_loader(dataset, chip, args.batch, chips, workers)

    jobs: list[Job] = [(None, "geoseg", geoseg(setup.local, {}), {})]
    if setup.torchgeo_local is not None:
        jobs.append((None, "TorchGeo", torchgeo(setup.torchgeo_local), {}))
    for lat in args.latency_ms:
        for name, data, gdal in geoseg_rows(args):
            jobs.append((lat, name, geoseg(setup.remote, data), gdal))
        if setup.torchgeo_remote is not None:  # GDAL's defaults, as a TorchGeo user has them
            defaults = dict.fromkeys(REMOTE_GDAL_OPTIONS)
            jobs.append((lat, "TorchGeo", torchgeo(setup.torchgeo_remote), defaults))
            if not args.no_tuned_torchgeo and lat == max(args.latency_ms):
                tuned = dict(REMOTE_GDAL_OPTIONS)
                jobs.append((lat, "TorchGeo + geoseg GDAL options", torchgeo(setup.torchgeo_remote), tuned))
    return jobs


def prepare(args: argparse.Namespace, images: list[str], labels: list[str], urls: list[str],
            label_urls: list[str], chips: int, use_torchgeo: bool) -> dict[int, Setup]:  # fmt: skip
    """geoseg's scenes and random chips per chip size (the same chips local and remote); TorchGeo's
    datasets."""
    tg_local = tg_remote = None
    if use_torchgeo:  # indexed here, not timed; see TORCHGEO_CONSTRUCTION
        with gdal_options(TORCHGEO_CONSTRUCTION):
            tg_local, tg_remote = torchgeo_dataset(images, labels), torchgeo_dataset(urls, label_urls)
    setups = {}
    for chip in args.chip_sizes:
        opts = {"class_codes": CODES, "label_nodata": LABEL_NODATA, "chip_size": chip}
        local = [inspect_scene(i, lab, **opts) for i, lab in zip(images, labels, strict=True)]
        remote = [inspect_scene(u, lab, **opts) for u, lab in zip(urls, label_urls, strict=True)]
        cfg = data_config(chip, args.batch, chips, "auto")
        sampler = random_sampler(local, cfg, ClassMap(list(CODES)), seed=0, rank=0, world_size=1)
        setups[chip] = Setup(local, remote, sampler, tg_local, tg_remote)
    return setups


def parse_args() -> argparse.Namespace:
    """The command line (``--quick`` replaces the sizes with a smoke run's)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--scenes", type=int, default=6, help="scene pairs (image + label)")
    add("--side", type=int, default=4096, help="scene side in px")
    add("--chip-sizes", type=int, nargs="+", default=[256, 512])
    add("--latency-ms", type=float, nargs="+", default=[0, 20, 100])
    add("--batches", type=int, default=5, help="timed batches per pass")
    add("--warmup", type=int, default=2, help="batches before the timing starts")
    add("--batch", type=int, default=8)
    add("--repeats", type=int, default=3)
    add("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
        help="an extra remote geoseg row with these options: upper case a GDAL option "
             "(GDAL_HTTP_MULTIRANGE=SINGLE_GET), lower case a data option (num_workers=2)")  # fmt: skip
    add("--gdal", action="append", default=[], metavar="KEY=VALUE",
        help="a GDAL option for every remote geoseg row")  # fmt: skip
    add("--no-torchgeo", action="store_true", help="leave TorchGeo out")
    add("--no-tuned-torchgeo", action="store_true",
        help="leave out TorchGeo with geoseg's GDAL options (run at the highest latency only)")  # fmt: skip
    add("--no-rif1", action="store_true", help="leave out geoseg with 1 read in flight")
    add("--quick", action="store_true", help="smoke run: 2 scenes of 2048², 2 timed batches, 0 and 20 ms")
    add("--scratch", type=Path, default=Path("outputs/bench_data"), help="the COGs are cached here")
    add("--output", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.side, args.batches, args.warmup, args.repeats = 2, 2048, 2, 1, 1
        args.latency_ms = [0, 20]
    return args


def torchgeo_available(wanted: bool) -> bool:
    """Whether TorchGeo is wanted and installed (it says so when it is not)."""
    if not wanted:
        return False
    try:
        import torchgeo  # noqa: F401
    except ImportError:
        print('# TorchGeo is not installed (pip install -e ".[bench]"): no TorchGeo rows', file=sys.stderr)
        return False
    return True


def main() -> None:
    args = parse_args()
    use_torchgeo = torchgeo_available(not args.no_torchgeo)
    started = time.perf_counter()
    header = [f"# {datetime.date.today()} | {platform.node()} | {machine_line()} (at the start)"]
    print(header[0], file=sys.stderr)
    torch.set_num_threads(1)
    for name in ("NO_PROXY", "no_proxy"):  # never a proxy between GDAL and 127.0.0.1
        os.environ[name] = "127.0.0.1,localhost"
    folder = make_scenes(args.scratch, args.scenes, args.side)
    images = [str(folder / f"s2_{k}.tif") for k in range(args.scenes)]
    labels = [str(folder / f"label_{k}.tif") for k in range(args.scenes)]
    chips = (args.warmup + args.batches) * args.batch
    workers = num_workers(data_config(256, args.batch, chips, "auto"))
    results: dict[tuple[int, float | None, str], Result] = {}
    with load_server_module("range_http").RangeServer(folder) as server:
        urls = [server.url(Path(p).name) for p in images]
        label_urls = [server.url(Path(p).name) for p in labels]
        setups = prepare(args, images, labels, urls, label_urls, chips, use_torchgeo)
        for repeat in range(args.repeats):  # interleaved: a slow spell of the machine hits every row alike
            for chip, setup in setups.items():
                for lat, name, make, options in jobs_for(chip, setup, args, chips, workers):
                    server.latency_s = 0.0 if lat is None else lat / 1000
                    t0 = time.perf_counter()
                    result = results.setdefault((chip, lat, name), Result())
                    with gdal_options(options):
                        run_pass(make, args.warmup, server, result)
                    where = "local" if lat is None else f"{lat:g} ms"
                    print(f"# repeat {repeat + 1}/{args.repeats} | {chip} px | {where} | {name}: "
                          f"{result.rates[-1]:.1f} chips/s, {result.requests[-1]:.2f} requests/chip "
                          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    header += [
        f"# {machine_line()} (at the end; {(time.perf_counter() - started) / 60:.1f} min in all)",
        f"# python {shlex.join(sys.argv)} | {args.scenes} scenes of {args.side}² px (13-band int16 COG, "
        f"256-px tiles, deflate, + int16 label) | batch {args.batch} | {workers} DataLoader worker(s) | "
        f"{args.batches * args.batch} timed chips per pass after {args.warmup} warm-up batches | median of "
        f"{args.repeats}",
        "# tiles read twice within a pass (GDAL's caches serve them in every reader): "
        + ", ".join(f"{c} px {100 * tiles_read_twice(s.sampler, c):.0f}%" for c, s in setups.items()),
    ]
    text = "\n".join([*header, "", *table(results, args.chip_sizes)]) + "\n"
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text)


def table(results: dict[tuple[int, float | None, str], Result], chip_sizes: list[int]) -> list[str]:
    """Markdown: chips/s, against the same reader on local disk, geoseg against each TorchGeo row, and the
    requests and kB per chip."""
    lines = [
        "| chip | latency | reader | chips/s | × local (same reader) | geoseg / this | requests/chip "
        "| kB/chip |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for chip in chip_sizes:
        for (c, lat, name), r in results.items():
            if c != chip:
                continue
            rate = statistics.median(r.rates)
            base = results.get((chip, None, "TorchGeo" if name.startswith("TorchGeo") else "geoseg"))
            local = f"{rate / statistics.median(base.rates):.2f}×" if base and lat is not None else "–"
            ours = results.get((chip, lat, "geoseg"))
            tg = name.startswith("TorchGeo")
            vs = f"{statistics.median(ours.rates) / rate:.1f}×" if tg and ours else "–"
            where = "local disk" if lat is None else f"{lat:g} ms"
            req = "–" if lat is None else f"{statistics.median(r.requests):.2f}"
            kb = "–" if lat is None else f"{statistics.median(r.kbytes):.0f}"
            lines.append(f"| {chip} | {where} | {name} | {rate:.1f} | {local} | {vs} | {req} | {kb} |")
    return lines


if __name__ == "__main__":
    main()
