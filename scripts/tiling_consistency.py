"""How much each trained model's class map depends on the tiling, with each norm-statistics mode.

For every run folder (its best.pt, else last.pt) and every val scene of its training config, the
whole scene is predicted in memory at every tile size x overlap, with the norm statistics:

- ``tile``: plain (each tile normalises by itself: geoseg 0.1 and ``norm_stats=tile``);
- ``scene``: held from training-chip-size windows of the scene (``norm_stats=scene``);
- ``pooled``: the same windows taken as one image (variance includes the spread between windows);
- ``train``: held from chip-size windows of the training split (what statistics stored at training
  would give).

Each map is compared with the map of the largest tile without overlap (the scene in one tile, the
reference; a tile larger than the scene is fitted to it, as predict does): the share of valid pixels
whose class changes, and the seam score (that change rate within ``--edge`` px of the tiling's inner
tile edges divided by the rate elsewhere). mIoU is over the val region. Models without
GroupNorm/InstanceNorm/FRN layers are measured in ``tile`` mode only (the modes do not change them).
Writes JSON rows and a Markdown table.

    python scripts/tiling_consistency.py 'outputs/tiling/runs_sen1floods11/*/seed=0' \\
        --tiles 64,128,256,512 --overlaps 0,64 --modes tile,scene,train --out outputs/tiling/sen1floods11.json
    python scripts/tiling_consistency.py --table outputs/tiling/sen1floods11.json ...   # Markdown tables
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import logging
import math
import os
import sys
import time

import torch

from geoseg.data.build import load_scenes
from geoseg.data.normalize import batch_dtype, raw_fill_values
from geoseg.engine.checkpoint import load_checkpoint
from geoseg.inference.loaded import load_model
from geoseg.inference.norm_calibration import scene_statistics
from geoseg.inference.tiling import fitted_tile, plan_tiles
from geoseg.inference.tiling_consistency import (
    change_rate,
    edge_band,
    predict_map,
    region_labels,
    region_miou,
    seam_score,
)
from geoseg.io import atomic_paths
from geoseg.models.norm_statistics import tile_dependent_layers

MODES = ("tile", "scene", "pooled", "train")


def checkpoint_of(run: str) -> str | None:
    for name in ("best.pt", "last.pt"):
        if os.path.isfile(os.path.join(run, name)):
            return os.path.join(run, name)
    return None


def measure_run(run: str, tiles: list[int], overlaps: list[int], modes: list[str], edge: int) -> list[dict]:
    path = checkpoint_of(run)
    if path is None:
        logging.warning("%s: no best.pt or last.pt, skipped", run)
        return []
    device = torch.device("cpu")
    loaded = load_model(path, device)
    cfg = load_checkpoint(path)["config"]
    chip = int(cfg["data"]["chip_size"])
    norm = str(cfg.get("norm", {}).get("_target_", "?")).rsplit(".", 1)[-1]
    codes = [int(c["code"]) for c in cfg["data"]["classes"]]
    held_modes = modes if tile_dependent_layers(loaded.model) else ["tile"]
    val = load_scenes(cfg["data"], "val", progress=False)
    train = load_scenes(cfg["data"], "train", progress=False)
    model, classes, rows = loaded.model, len(codes), []
    for scene in val:
        labels = region_labels(scene, codes)
        fill = raw_fill_values(loaded.stats.mean, batch_dtype([scene.dtype]))
        shape = (scene.height, scene.width)
        for mode in held_modes:
            started = time.perf_counter()
            held = None
            if mode in ("scene", "pooled"):
                held = scene_statistics(model, scene.reader, shape, fill, chip, device)
            elif mode == "train":
                src = ([s for s in train if s.image == scene.image] or train[:1])[0]
                held = scene_statistics(model, src.reader, (src.height, src.width), fill, chip, device,
                                        region=src.region)  # fmt: skip
            calib = time.perf_counter() - started
            maps, seconds = {}, {}
            for tile, overlap in itertools.product(tiles, overlaps):
                if overlap > tile // 2:
                    continue
                t0 = time.perf_counter()
                maps[(tile, overlap)] = predict_map(model, scene.reader, shape, fill, classes, tile, overlap,
                                                    device, held=held, pooled=mode == "pooled")  # fmt: skip
                seconds[(tile, overlap)] = time.perf_counter() - t0
            ref_key = (max(tiles), 0)
            ref = maps[ref_key]
            keys = list(maps)
            pair_max = max(change_rate(maps[a], maps[b]) for a, b in itertools.combinations(keys, 2))
            for (tile, overlap), m in maps.items():
                fitted = fitted_tile(tile, scene.height, scene.width, int(model.size_divisor))
                plan = plan_tiles(
                    scene.height, scene.width, fitted, overlap, -(-max(fitted, scene.width) // 256) * 256
                )
                seam = seam_score(m, ref, edge_band(plan, edge))
                rows.append({
                    "run": run, "norm": norm, "scene": scene.name, "height": scene.height,
                    "width": scene.width, "chip": chip, "mode": mode,
                    "tile": tile, "overlap": overlap, "tiles": plan.num_tiles,
                    "change_vs_one_tile": change_rate(m, ref), **seam,
                    "miou_val": region_miou(m, labels, len(codes)), "pairwise_max_change": pair_max,
                    "seconds": seconds[(tile, overlap)], "calibration_seconds": calib,
                })  # fmt: skip
            logging.info("%s %s %s: pairwise max change %.4f", norm, scene.name, mode, pair_max)
    return rows


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def per_tiling(rows: list[dict]) -> list[dict]:
    """Rows averaged over the scenes of a dataset: one per data, norm, mode, tile and overlap."""
    keys = ("change_vs_one_tile", "near_edges", "elsewhere", "seam_score", "miou_val", "seconds")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], r["norm"], r["mode"], r["tile"], r["overlap"]), []).append(r)
    out = []
    for group in groups.values():
        row = dict(group[0], scenes=len(group))
        for key in keys:
            values = [r[key] for r in group if r[key] is not None]
            row[key] = sum(values) / len(values) if values else None
        out.append(row)
    return out


def summary_table(rows: list[dict]) -> str:
    """Per model and mode (averaged over scenes): the largest change against the one-tile map over all
    tilings, the change at the smallest tile without overlap, the mean seam score without overlap, the
    mIoU range."""
    lines = ["| data | norm | norm_stats | largest change vs one tile | at tile " "S, overlap 0 | seam score "
             "(overlap 0) | val mIoU min–max over tilings | mIoU at tile = chip | mIoU at the largest tile |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in per_tiling(rows):
        groups.setdefault((r["data"], r["norm"], r["mode"]), []).append(r)
    for (data, norm, mode), rs in groups.items():
        small = min(r["tile"] for r in rs)
        at_small = next(r for r in rs if r["tile"] == small and r["overlap"] == 0)
        seams = [r["seam_score"] for r in rs if r["overlap"] == 0 and r["seam_score"] is not None]
        mious = [r["miou_val"] for r in rs if r["miou_val"] is not None]
        chip = [r["miou_val"] for r in rs if r["tile"] == r["chip"] and r["overlap"] == 0]
        largest = max(r["tile"] for r in rs)
        big = next(r for r in rs if r["tile"] == largest and r["overlap"] == 0)
        seam = f"{sum(seams) / len(seams):.1f}" if seams else "–"
        lines.append(
            f"| {data} | {norm} | {mode} | {pct(max(r['change_vs_one_tile'] for r in rs))} | "
            f"{pct(at_small['change_vs_one_tile'])} (S={small}) | {seam} | "
            f"{min(mious):.4f}–{max(mious):.4f} | {f'{chip[0]:.4f}' if chip else '–'} | "
            f"{big['miou_val']:.4f} |"
        )
    return "\n".join(lines)


def tiling_table(rows: list[dict], norms: list[str]) -> str:
    """Per tiling (tile x overlap) for ``norms``: change vs one tile, seam score, mIoU, seconds."""
    lines = ["| data | norm | norm_stats | tile | overlap | tiles | change vs one tile | near edges | "
             "elsewhere | val mIoU | seconds |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in per_tiling(rows):
        if r["norm"] in norms:
            lines.append(
                f"| {r['data']} | {r['norm']} | {r['mode']} | {r['tile']} | {r['overlap']} | {r['tiles']} | "
                f"{pct(r['change_vs_one_tile'])} | {pct(r['near_edges'])} | {pct(r['elsewhere'])} | "
                f"{r['miou_val']:.4f} | {r['seconds']:.1f} |"
            )  # fmt: skip
    return "\n".join(lines)


HELD_BY_DEFAULT = ("GroupNorm", "GroupNormWS", "InstanceNorm2d")  # norm_stats=auto holds these (predict)


def before_after(rows: list[dict]) -> str:
    """Per data and norm: each tile normalised by itself (before) against predict's default (after)."""
    lines = ["| data | norm | predict's default | largest change vs one tile: before → after | seam score "
             "(overlap 0): before → after | val mIoU over tilings: before → after |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    groups: dict[tuple, list[dict]] = {}
    for r in per_tiling(rows):
        groups.setdefault((r["data"], r["norm"], r["mode"]), []).append(r)

    def cells(rs: list[dict]) -> tuple[str, str, str]:
        seams = [r["seam_score"] for r in rs if r["overlap"] == 0 and r["seam_score"] is not None]
        mious = [r["miou_val"] for r in rs if r["miou_val"] is not None]
        seam = f"{sum(seams) / len(seams):.1f}" if seams else "–"
        return pct(max(r["change_vs_one_tile"] for r in rs)), seam, f"{min(mious):.3f}–{max(mious):.3f}"

    for (data, norm, mode), rs in groups.items():
        if mode != "tile":
            continue
        after_mode = "scene" if norm in HELD_BY_DEFAULT and (data, norm, "scene") in groups else "tile"
        before, after = cells(rs), cells(groups[(data, norm, after_mode)])
        pairs = " | ".join(f"{b} → {a}" for b, a in zip(before, after, strict=True))
        lines.append(f"| {data} | {norm} | {after_mode} | {pairs} |")
    return "\n".join(lines)


def tables(paths: list[str], detail: list[str]) -> int:
    rows = []
    for path in paths:
        data = os.path.splitext(os.path.basename(path))[0].split("-")[0]
        with open(path) as f:
            rows += [{"data": data, **r} for r in json.load(f)]
    print(before_after(rows))
    print()
    print(summary_table(rows))
    print()
    print(tiling_table(rows, detail))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders (globs quoted)")
    parser.add_argument("--table", nargs="+", help="print Markdown tables of these JSON files instead")
    parser.add_argument("--detail", default="BatchNorm2d,GroupNorm", help="norms of the per-tiling table")
    parser.add_argument("--tiles", default="128,256,512,1024")
    parser.add_argument("--overlaps", default="0,64")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--edge", type=int, default=4, help="px each side of a tile edge in the seam band")
    parser.add_argument("--out", help="new JSON file (an existing one is never replaced)")
    args = parser.parse_args()
    if args.table:
        return tables(args.table, args.detail.split(","))
    if not args.out or not args.runs:
        sys.exit("give run folders and --out (or --table FILES)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if os.path.exists(args.out):
        sys.exit(f"--out {args.out} exists; give a new name")
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        sys.exit(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
    tiles = sorted(int(t) for t in args.tiles.split(","))
    overlaps = sorted(int(o) for o in args.overlaps.split(","))
    runs = sorted(itertools.chain.from_iterable(glob.glob(r) for r in args.runs))
    if not runs:
        sys.exit(f"no run folder matches {args.runs}")
    rows = []
    for run in runs:
        rows += measure_run(run, tiles, overlaps, modes, args.edge)
    with atomic_paths(args.out) as (tmp,), open(tmp, "w") as f:
        json.dump([{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                   for r in rows], f, indent=1)  # fmt: skip
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
