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

    python scripts/bench_train_input.py --workers 0 1 2                       # the demo data
    python scripts/bench_train_input.py --cog 4096 --workers 0 1 2 -- data.chip_size=256 data.batch_size=4
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from geoseg.config import config_dir
from geoseg.engine.fit import optimizer_step
from geoseg.engine.run import Run, build_run
from geoseg.engine.runtime import to_device
from synthetic_scenes import write_synthetic


def cog_overrides(size: int) -> list[str]:
    """Write (once) a COG scene in the demo folder layout and return the overrides that train on it."""
    root = Path("outputs/bench_data") / f"cog_{size}"
    for split in ("train", "val"):
        write_synthetic(root / split / "images/scene.tif", root / split / "labels/scene.tif", size, "cog")
    return [f"data.root={root}", "data.demo=null"]


def train_step(run: Run, model: torch.nn.Module, batch: dict) -> None:
    """One optimizer step of the training loop (no accumulation, no DDP)."""
    images, target = to_device(batch, run.info.device, bool(run.trainer["channels_last"]))
    with torch.autocast(run.info.device.type, dtype=run.amp, enabled=run.amp is not None):
        loss = run.loss_fn(model(images), target)
    run.scaler.scale(loss).backward()
    optimizer_step(run.model, run.optimizer, run.scaler, run.trainer["grad_clip"])


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


def measure(overrides: list[str], workers: int, steps: int, warmup: int) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cog", type=int, default=None, help="train on a generated COG of this side")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for `geoseg train`")
    args = parser.parse_args()
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
