"""Whole-scene inference: ``geoseg predict``'s streaming path against a naive whole-scene baseline.

For each scene size a synthetic 4-band uint16 GeoTIFF (tiled, deflate, nodata collar) and an
untrained U-Net checkpoint are written to a temp folder. Each run happens in a fresh subprocess so
its peak RSS is its own (``peak_memory_mb``: Linux ``VmHWM``, which starts afresh at exec):

- ``streaming``: ``geoseg.inference`` as ``geoseg predict`` runs it (tile/overlap, raised-cosine
  blending, blocks written as they finish);
- ``naive``: read the whole scene, predict non-overlapping tiles, keep the whole class map, write once.

``streaming`` runs twice: with ``--overlap`` (the default ``geoseg predict`` setting, more tiles) and
with overlap 0 (the naive run's tiles). ``--model trivial`` swaps the U-Net for a 1x1 convolution, so
only reading, blending and writing count (the pipeline's ceiling). ``--baseline REF`` also runs the
streaming rows with the ``geoseg`` of git revision REF (checked out in a temporary worktree), in the
same invocation, for a before/after comparison on one machine.

GDAL's block cache is capped at ``--gdal-cache-mb`` in every run: its default (5% of RAM) keeps
decompressed blocks of whatever was read, so without a cap both modes' RSS grows with the scene up
to that size, which hides what the algorithms themselves hold.

    python scripts/bench_infer.py --sizes 2048 4096 8192 --tile 512 --overlap 64
    python scripts/bench_infer.py --sizes 4096 --model trivial unet --baseline HEAD~5 --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.data.scenes import inspect_scene
from geoseg.data.stats import compute_stats
from geoseg.device import AMP
from geoseg.engine.checkpoint import save_model_checkpoint
from geoseg.engine.log import peak_memory_mb
from geoseg.inference.loaded import load_model
from geoseg.inference.predict import PredictOptions, predict_scene, prepare
from geoseg.models.build import build_model
from geoseg.models.memory_format import channels_last_for
from geoseg.models.norms import norm_preset

BANDS, CLASSES = 4, 4
NORM = {"_target_": "torch.nn.BatchNorm2d", "_partial_": True}


def write_scene(path: str, side: int) -> None:
    """A side x side 4-band uint16 scene written strip by strip (smooth fields, a nodata collar)."""
    profile = dict(driver="GTiff", width=side, height=side, count=BANDS, dtype="uint16", nodata=0, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", crs="EPSG:32633",
                   transform=from_origin(400_000, 5_000_000, 10, 10))  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, side, 512):
            h = min(512, side - row)
            yy, xx = np.mgrid[row : row + h, 0:side]
            base = 1500 + 800 * np.sin(xx / 97.0) * np.cos(yy / 61.0)
            data = np.stack([base * (1 + 0.2 * b) + rng.normal(0, 60, base.shape) for b in range(BANDS)])
            data = np.clip(data, 1, 60000).astype(np.uint16)
            data[:, :, : side // 20] = 0  # nodata collar on the left
            dst.write(data, window=Window(0, row, side, h))


def write_checkpoint(path: str, scene: str) -> None:
    stats = compute_stats([inspect_scene(scene, None)], progress=False)
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", BANDS, CLASSES, norm_preset("batchnorm"), stats=stats)
    classes = [{"code": i, "name": f"class{i}"} for i in range(CLASSES)]
    save_model_checkpoint(path, model.eval(), asdict(stats), {"norm": NORM, "data": {"classes": classes}})


class Trivial(torch.nn.Module):
    """A 1x1 convolution on the normalised bands: a model that costs nothing beside the pipeline."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.normalize, self.meta = model.normalize, model.meta
        self.conv = torch.nn.Conv2d(BANDS, CLASSES, 1)
        self.in_channels, self.size_divisor = model.in_channels, model.size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.normalize(x))


def run_streaming(ckpt: str, scene: str, out: str, tile: int, overlap: int, batch: int,
                  device: torch.device, amp: torch.dtype | None, model: str) -> dict:  # fmt: skip
    loaded = load_model(ckpt, device)
    if model == "trivial":
        torch.manual_seed(0)
        loaded.model = Trivial(loaded.model).to(device).eval()
    wanted = dict(tile=tile, overlap=overlap, batch_size=batch, progress=False, existing="overwrite")
    known = {f.name for f in dataclasses.fields(PredictOptions)}  # a --baseline revision may lack options
    opts = PredictOptions(**{k: v for k, v in wanted.items() if k in known})
    opts.channels_last = channels_last_for("auto", loaded.model, "channels_last")  # as `geoseg predict`
    if opts.channels_last:
        loaded.model.to(memory_format=torch.channels_last)
    (job,) = prepare(loaded, [scene], [out], opts)
    return predict_scene(loaded, job, opts, device, amp)


@torch.inference_mode()
def run_naive(ckpt: str, scene: str, out: str, tile: int, batch: int,
              device: torch.device, amp: torch.dtype | None) -> dict:  # fmt: skip
    """Whole scene in memory, non-overlapping tiles (edges padded), one write at the end."""
    started = time.perf_counter()
    model = load_model(ckpt, device).model
    with rasterio.open(scene) as src:
        image, profile = src.read(), src.profile
    c, h, w = image.shape
    ph, pw = -(-h // tile) * tile, -(-w // tile) * tile
    padded = np.zeros((c, ph, pw), dtype=image.dtype)
    padded[:, :h, :w] = image
    classes = np.zeros((ph, pw), dtype=np.uint8)
    cells = [(r, q) for r in range(0, ph, tile) for q in range(0, pw, tile)]
    for i in range(0, len(cells), batch):
        part = cells[i : i + batch]
        x = torch.from_numpy(np.stack([padded[:, r : r + tile, q : q + tile] for r, q in part])).to(device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            pred = model(x).argmax(1).cpu().numpy().astype(np.uint8)
        for (r, q), p in zip(part, pred, strict=True):
            classes[r : r + tile, q : q + tile] = p
    result = classes[:h, :w].copy()
    result[(image == 0).all(0)] = 255
    profile.update(count=1, dtype="uint8", nodata=255)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(result, 1)
    return {"tiles": len(cells), "seconds": time.perf_counter() - started, "megapixels": h * w / 1e6}


def child(args: argparse.Namespace) -> None:
    """One measured run in this process; prints a JSON line with its numbers and peak RSS."""
    torch.set_num_threads(args.threads)
    device, amp = torch.device(args.device), AMP[args.amp]
    if args.mode == "streaming":
        res = run_streaming(
            args.ckpt, args.scene, args.out, args.tile, args.overlap, args.batch, device, amp, args.model[0]
        )
    else:
        res = run_naive(args.ckpt, args.scene, args.out, args.tile, args.batch, device, amp)
    rss = peak_memory_mb(device)  # CUDA: max allocated; CPU: the process's peak RSS
    print(json.dumps({**{k: res[k] for k in ("tiles", "seconds", "megapixels")}, "peak_rss_mb": rss}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--gdal-cache-mb", type=int, default=64, help="GDAL_CACHEMAX of every run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", choices=list(AMP), default="fp32", help="autocast dtype of the forward pass")
    parser.add_argument(
        "--model",
        nargs="+",
        choices=["unet", "trivial"],
        default=["unet"],
        help="unet: U-Net/ResNet-18; trivial: a 1x1 conv (the pipeline's ceiling)",
    )
    parser.add_argument("--baseline", metavar="REF", help="also run the streaming rows with git revision REF")
    parser.add_argument("--modes", nargs="+", default=["naive", "streaming"], choices=["naive", "streaming"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, interleaved: best, median")
    parser.add_argument("--mode", choices=["streaming", "naive"], help=argparse.SUPPRESS)
    for hidden in ("--ckpt", "--scene", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        return child(args)
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    print(f"# {platform.node()} | {where} | {args.amp} | {args.threads} threads | "
          f"torch {torch.__version__} | GDAL_CACHEMAX {args.gdal_cache_mb} MB | "
          f"{time.strftime('%Y-%m-%d')}")  # fmt: skip
    memory = "peak GPU allocated (MB)" if args.device == "cuda" else "peak RSS (MB)"
    print(f"| scene | model | code | mode | overlap | tiles | seconds (best / median of {args.repeat}) | "
          f"MP/s (best) | {memory} |")  # fmt: skip
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        codes = {"current": None}
        if args.baseline:
            tree = os.path.join(tmp, "baseline")
            subprocess.run(["git", "worktree", "add", "--detach", "-q", tree, args.baseline], check=True)
            codes = {args.baseline: os.path.join(tree, "src"), **codes}
        try:
            for side in args.sizes:
                bench_size(args, tmp, side, codes)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", tree], check=True)


def bench_size(args: argparse.Namespace, tmp: str, side: int, codes: dict[str, str | None]) -> None:
    """The rows of one scene size: every model, code revision, mode and overlap in a fresh process."""
    scene, ckpt = os.path.join(tmp, f"scene{side}.tif"), os.path.join(tmp, "model.pt")
    write_scene(scene, side)
    write_checkpoint(ckpt, scene)
    runs = [("naive", 0, "current")] if "naive" in args.modes else []
    if "streaming" in args.modes:
        runs += [("streaming", ov, code) for ov in sorted({0, args.overlap}) for code in codes]
    for model in args.model:
        outputs: dict[tuple[int, str], str] = {}
        results: dict[tuple[str, int, str], list[dict]] = {run: [] for run in runs}
        for rep in range(args.repeat):  # interleaved, so a noisy neighbour slows every revision alike
            for mode, overlap, code in runs:
                out = os.path.join(tmp, f"{model}_{mode}_{overlap}_{code}_{rep}.tif")
                results[(mode, overlap, code)].append(child_run(args, ckpt, scene, out, mode, overlap, model,
                                                                codes[code]))  # fmt: skip
                if mode == "streaming" and rep == 0:
                    outputs[(overlap, code)] = out
                elif os.path.exists(out):
                    os.remove(out)
        for (mode, overlap, code), done in results.items():
            seconds = sorted(r["seconds"] for r in done)
            best, median = seconds[0], float(np.median(seconds))
            res = done[0]
            print(f"| {side}×{side} | {model} | {code} | {mode} | {overlap} | {res['tiles']} | "
                  f"{best:.2f} / {median:.2f} | {res['megapixels'] / best:.2f} | "
                  f"{max(r['peak_rss_mb'] for r in done):.0f} |", flush=True)  # fmt: skip
        for overlap in sorted({ov for ov, _ in outputs}):
            maps = [outputs[(overlap, code)] for code in codes if (overlap, code) in outputs]
            if len(maps) == 2:
                same = _read_classes(maps[0]).tobytes() == _read_classes(maps[1]).tobytes()
                print(
                    f"# {side}² {model} overlap {overlap}: class maps of {' and '.join(codes)} "
                    f"{'identical' if same else 'DIFFER'}",
                    flush=True,
                )


def child_run(args: argparse.Namespace, ckpt: str, scene: str, out: str, mode: str, overlap: int, model: str,
              src: str | None) -> dict:  # fmt: skip
    """One run in a fresh process (its own peak RSS), with the ``geoseg`` of ``src`` when given."""
    env = {**os.environ, "GDAL_CACHEMAX": str(args.gdal_cache_mb)}
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--mode", mode, "--ckpt", ckpt, "--scene", scene, "--out", out,
           "--tile", str(args.tile), "--overlap", str(overlap), "--batch", str(args.batch),
           "--threads", str(args.threads), "--device", args.device, "--amp", args.amp,
           "--model", model]  # fmt: skip
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(proc.stdout.splitlines()[-1])


def _read_classes(path: str) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


if __name__ == "__main__":
    main()
