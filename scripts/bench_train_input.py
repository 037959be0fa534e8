"""The data loader's share of a training step: real chips from the loader against the same step on a
batch already in memory, for several DataLoader worker counts.

For each ``--workers`` value the script builds the run exactly as ``geoseg train`` does
(``build_run`` from the composed Hydra config plus your overrides), then times, after ``--warmup``:

- ``loader``: the train DataLoader alone (chips/s it can deliver, no model);
- ``train``: ``--steps`` full training steps on the loader's batches (to device, forward under the
  run's autocast, loss, backward, optimizer step), as the loop runs them;
- ``in memory``: the same steps on one batch that stays on the device: the compute-bound limit.

``input share = 1 - train / in memory``: the fraction of step time spent waiting for data.
``--cog SIZE`` first writes a 13-band SIZExSIZE uint16 Cloud Optimized GeoTIFF (512-px tiles,
deflate, overviews) with a 4-class label under ``outputs/bench_data/cog_SIZE`` and trains on it
(the same scene as train and val split).

``--per-core`` instead measures what one core of the train loader delivers (0 workers, one GDAL
thread unless ``--gdal-threads``, flip augmentation, batch 32): random chips/s at each ``--chips``
size from a 13-band int16 scene tiled 512 with deflate, and from its ``geoseg convert`` copy (tiled
512, uncompressed), with ``data.chips_per_block`` 1 (independent chips) and 4 (chips drawn per file
block); ``--baseline REF`` adds the loader of git revision REF (in a temporary worktree). Each row
runs in a fresh process (GDAL's block cache empty) with ``GDAL_CACHEMAX`` at ``--gdal-cache-mb``
(128 MB: one of the 8 workers ``num_workers=auto`` starts on a 16-core GPU host); ``--repeat``
interleaves the runs and reports the median and best.

    python scripts/bench_train_input.py --workers 0 1 2                       # the demo data
    python scripts/bench_train_input.py --cog 4096 --workers 0 1 2 -- data.chip_size=256 data.batch_size=4
    python scripts/bench_train_input.py --cog 4096 --workers auto -- data.chip_size=512 data.batch_size=32 \
        encoder=resnet34 trainer.amp=bf16 trainer.device=cuda       # on a GPU: the share at default workers
    python scripts/bench_train_input.py --per-core --size 4096 --chips 256 512 --repeat 3 --baseline ce4534a
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio
import torch
from hydra import compose, initialize_config_dir

from geoseg.config import as_dict, config_dir
from geoseg.data.build import build_augment, build_split, load_scenes, train_stats
from geoseg.data.convert import convert_file
from geoseg.engine.fit import optimizer_step
from geoseg.engine.run import build_run
from geoseg.engine.runtime import to_device
from geoseg.engine.state import Run
from synthetic_scenes import write_synthetic


def cog_overrides(size: int) -> list[str]:
    """Write (once) a COG scene in the demo folder layout and return the overrides that train on it."""
    root = Path("outputs/bench_data") / f"cog_{size}"
    for split in ("train", "val"):
        write_synthetic(root / split / "images/scene.tif", root / split / "labels/scene.tif", size, "cog")
    return [f"data.root={root}", "data.demo=null"]


def train_step(run: Run, model: torch.nn.Module, batch: dict) -> None:
    """One optimizer step of the training loop (no accumulation, no DDP)."""
    images, target = to_device(batch, run.info.device, run.channels_last)
    with torch.autocast(run.info.device.type, dtype=run.amp, enabled=run.amp is not None):
        loss = run.loss_fn(model(images), target)
    run.scaler.scale(loss).backward()
    optimizer_step(run.model, run.optimizer, run.scaler, run.options.grad_clip)


def rate(run: Run, batches, steps: int, warmup: int, work) -> float:
    """Tiles/s of ``work(batch)`` over ``steps`` batches after ``warmup`` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        work(next(it))
    sync = torch.cuda.synchronize if run.info.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        work(next(it))
    sync()
    return steps * run.batch_size / (time.perf_counter() - start)


def measure(overrides: list[str], workers: int | str, steps: int, warmup: int) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"data.num_workers={workers}"])
    cfg.data.chips_per_epoch = int(cfg.data.batch_size) * (steps + warmup + 1)
    with tempfile.TemporaryDirectory() as run_dir:
        run = build_run(cfg, run_dir)
        model = run.model.train()

        def step(batch: dict) -> None:
            train_step(run, model, batch)

        out = {"loader": rate(run, run.train.loader, steps, warmup, lambda b: None)}
        fixed = next(iter(run.train.loader))
        out["memory"] = rate(run, iter(lambda: fixed, None), steps, warmup, step)
        out["train"] = rate(run, run.train.loader, steps, warmup, step)
        out["chip"], out["batch"] = int(cfg.data.chip_size), run.batch_size
        out["model"] = f"{run.model.meta['arch']}/{run.model.meta['encoder']} {run.model.meta['norm']}"
        out["device"] = str(run.info.device)
    return out


def per_core_scenes(size: int) -> dict[str, Path]:
    """(Once) the deflate-tiled int16 scene and its uncompressed `geoseg convert` copy: data roots."""
    roots = {"deflate": Path("outputs/bench_data") / f"int16_deflate512_{size}"}
    write_synthetic(roots["deflate"] / "train/images/scene.tif", roots["deflate"] / "train/labels/scene.tif",
                    size, "tiled", dtype="int16", block=512)  # fmt: skip
    roots["converted"] = Path("outputs/bench_data") / f"int16_converted512_{size}"
    for part in ("images", "labels"):
        target = roots["converted"] / "train" / part / "scene.tif"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            convert_file(
                str(roots["deflate"] / "train" / part / "scene.tif"), str(target), 512, "none", False
            )
    return roots


def loader_rate(
    root: str, chip: int, group: int, chips: int, cache_mb: int, threads: int
) -> tuple[float, int]:
    """Random chips/s of one core of the train loader (after one untimed batch) and its chip positions."""
    overrides = [
        f"data.root={root}", "data.demo=null", f"data.chip_size={chip}", "data.batch_size=32",
        f"++data.chips_per_block={group}",  # ++: a --baseline revision may lack the key
        "data.num_workers=0", f"data.chips_per_epoch={chips + 32}", f"data.cache_dir={root}/cache",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    data = as_dict(cfg.data)
    with rasterio.Env(GDAL_CACHEMAX=cache_mb * 2**20, GDAL_NUM_THREADS=threads):
        scenes = load_scenes(data, "train", progress=False)
        stats = train_stats(data, progress=False, scenes=scenes)
        split = build_split(data, "train", stats, build_augment(cfg.aug), seed=0, scenes=scenes)
        batches = iter(split.loader)
        next(batches)  # opens the files
        start = time.perf_counter()
        count = sum(len(b["image"]) for b in batches)
        return count / (time.perf_counter() - start), len(split.sampler.p)


def child_rate(
    args: argparse.Namespace, root: Path, chip: int, group: int, src: str | None
) -> tuple[float, int]:
    """:func:`loader_rate` in a fresh process (GDAL's block cache empty), with the geoseg of ``src``."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--child", str(root), str(chip), str(group),
           str(args.per_core_chips), str(args.gdal_cache_mb), str(args.gdal_threads)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    rate, positions = json.loads(out.splitlines()[-1])
    return rate, positions


def per_core(args: argparse.Namespace) -> None:
    """The ``--per-core`` table: median and best chips/s over ``--repeat`` interleaved fresh processes."""
    roots = per_core_scenes(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        codes: dict[str, str | None] = {"current": None}
        if args.baseline:
            tree = os.path.join(tmp, "baseline")
            subprocess.run(["git", "worktree", "add", "--detach", "-q", tree, args.baseline], check=True)
            codes = {args.baseline: os.path.join(tree, "src"), **codes}
        cases = [(code, layout, chip, group) for layout in roots for chip in args.chips for code in codes
                 for group in ((1,) if code != "current" else args.groups)]  # fmt: skip
        rates: dict[tuple, list[float]] = {case: [] for case in cases}
        positions = {}
        try:
            for _ in range(args.repeat):  # interleaved, so a noisy neighbour slows every row alike
                for case in cases:
                    code, layout, chip, group = case
                    rate, positions[case] = child_rate(args, roots[layout], chip, group, codes[code])
                    rates[case].append(rate)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", tree], check=True)
    print(f"# {datetime.date.today()} | {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__}"
          f" | GDAL_CACHEMAX {args.gdal_cache_mb} MB | GDAL_NUM_THREADS {args.gdal_threads}"
          f" | {args.per_core_chips} chips per run")  # fmt: skip
    print(f"# python {shlex.join(sys.argv)}")
    print("| scene (13 × int16, 512-px tiles) | chip | code | chips_per_block | chip positions | "
          "chips/s (median) | best | vs first row of its chip |\n"
          "|---|---:|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for chip in args.chips:
        rows = [case for case in cases if case[2] == chip]
        base = statistics.median(rates[rows[0]])
        for case in rows:
            code, layout, _, group = case
            median = statistics.median(rates[case])
            print(f"| {args.size}², {layout} | {chip} | {code} | {group} | {positions[case]} | "
                  f"{median:.1f} | {max(rates[case]):.1f} | {median / base:.2f}× |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", nargs="+", default=["0", "1", "2"], help="counts, or auto (the default)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cog", type=int, default=None, help="train on a generated COG of this side")
    parser.add_argument("--per-core", action="store_true", help="one core's random chips/s (see above)")
    parser.add_argument("--size", type=int, default=4096, help="--per-core: scene side (px)")
    parser.add_argument("--chips", type=int, nargs="+", default=[256, 512], help="--per-core: chip sizes")
    parser.add_argument("--per-core-chips", type=int, default=256, help="--per-core: chips timed per run")
    parser.add_argument("--gdal-cache-mb", type=int, default=128, help="--per-core: GDAL_CACHEMAX (MB)")
    parser.add_argument("--repeat", type=int, default=1, help="--per-core: interleaved runs per row")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 4], help="--per-core: chips_per_block")
    parser.add_argument("--baseline", metavar="REF", help="--per-core: also run git revision REF's loader")
    parser.add_argument("--gdal-threads", type=int, default=1, help="--per-core: GDAL_NUM_THREADS")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for `geoseg train`")
    args = parser.parse_args()
    if args.child:
        root, *numbers = args.child
        print(json.dumps(loader_rate(root, *map(int, numbers))))
        return
    if args.per_core:
        per_core(args)
        return
    overrides = ["trainer.progress=false", *(cog_overrides(args.cog) if args.cog else []), *args.overrides]
    data = f"COG {args.cog}x{args.cog}, 13 bands" if args.cog else "config data"
    rows = []
    for workers in args.workers:
        r = measure(overrides, workers, args.steps, args.warmup)
        share = max(0.0, 1 - r["train"] / r["memory"])
        rows.append(
            f"| {data} | {r['model']} | {r['chip']} | {r['batch']} | {workers} | {r['loader']:.1f} | "
            f"{r['train']:.1f} | {r['memory']:.1f} | {100 * share:.0f}% |"
        )
    print(f"# {datetime.date.today()} | {platform.node()} | {os.cpu_count()} CPUs | torch {torch.__version__}"
          f" | {torch.get_num_threads()} threads | device {r['device']}")  # fmt: skip
    print(f"# python {shlex.join(sys.argv)}")
    print("| data | model | chip | batch | workers | loader chips/s | train tiles/s | in-memory tiles/s | "
          "input share |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    print("\n".join(rows))


if __name__ == "__main__":
    main()
