"""Transfer from a geoseg run on one Sentinel-2 dataset to another (docs/pretrained.md).

1. Pretrains U-Net/ResNet-18 (BatchNorm) on Sen1Floods11's 13 Sentinel-2 bands (water vs dry).
2. Trains the eo-learn Slovenia land-cover patch (13 Sentinel-2 bands, float reflectance where
   Sen1Floods11 has int16 x 10000) from scratch and from that run's best.pt (``encoder.weights=``):
   all 13 bands, and the band subset [B04, B03, B02, B08] mapped by name; on 100% of the training
   chips (5 dates, the train region) and on 10% (one date, half of the train region); 3 seeds each.
3. On the pretrained encoder, BatchNorm vs FrozenBatchNorm vs GroupNorm at batch 2 and 8.
4. At 10% of the chips, the pretrained encoder with ``encoder.lr_mult=0.1`` and with
   ``encoder.freeze_epochs=1``.
5. The encoder alone (its state dict saved from the run's best.pt, band names given with
   ``encoder.weights_bands``; a fresh decoder, as with ImageNet or SSL4EO weights): BatchNorm against
   FrozenBatchNorm (whose fresh decoder norms are identities) at batch 2.

Prints markdown tables of val mIoU (mean ± std over seeds). Run from the repo root:

    python scripts/transfer_pretrained.py --output outputs/transfer.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from geoseg.io import atomic_write_text

COMMON = [
    "trainer.tensorboard=false", "trainer.latest_link=null", "trainer.progress=false",
]  # fmt: skip
TARGET = ["data=eolearn_slovenia", "data.chips_per_epoch=512", "trainer.max_epochs=4"]
TEN_PERCENT = ["data.splits.train.images=s2_scene_1.tif", "data.splits.train.region=[0,0,0.667,0.5]"]
SUBSET = ["data.bands=[B04,B03,B02,B08]"]
SEEDS = (0, 1, 2)


def train(name: str, overrides: list[str], seed: int, root: str, keep: bool = False) -> dict:
    """One ``geoseg train`` run (skipped when its summary exists); its summary.json."""
    run_dir = os.path.join(root, name, f"seed{seed}")
    summary = os.path.join(run_dir, "summary.json")
    if not os.path.exists(summary):
        started = time.perf_counter()
        keeping = [] if keep else ["trainer.keep_checkpoints=none"]
        cmd = [sys.executable, "-m", "geoseg", "train", *overrides, *COMMON, *keeping, f"seed={seed}",
               f"hydra.run.dir={run_dir}"]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"{name} seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with open(summary, encoding="utf-8") as fh:
        return json.load(fh)


def save_encoder(checkpoint: str) -> list[str]:
    """The encoder's tensors of a geoseg checkpoint as a plain state dict beside it; the overrides that
    load it with the checkpoint's band names."""
    import torch

    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    prefix = "net.encoder."
    state = {k[len(prefix) :]: v for k, v in saved["model"].items() if k.startswith(prefix)}
    path = os.path.join(os.path.dirname(checkpoint), "encoder.pth")
    if not os.path.exists(path):
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)
    bands = ",".join(saved["meta"]["band_names"])
    return [f"encoder.weights={os.path.abspath(path)}", f"encoder.weights_bands=[{bands}]"]


def row(label: str, runs: list[dict]) -> str:
    values = [r["best_miou"] for r in runs]
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    shown = ", ".join(f"{v:.3f}" for v in values)
    return f"| {label} | {statistics.mean(values):.3f}{spread} | {shown} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="outputs/transfer.md")
    parser.add_argument("--runs", default="outputs/transfer", help="folder of the runs")
    args = parser.parse_args()
    source = ["data=sen1floods11", "trainer.max_epochs=6"]
    train("source_s1f11", source, 0, args.runs, keep=True)
    weights = [f"encoder.weights={os.path.abspath(os.path.join(args.runs, 'source_s1f11/seed0/best.pt'))}"]

    def runs(name: str, overrides: list[str]) -> list[dict]:
        return [train(name, [*TARGET, *overrides], s, args.runs) for s in SEEDS]

    table = ["| Slovenia training | val mIoU (mean ± std, 3 seeds) | per seed |", "|---|---:|---:|"]
    for bands, band_args in (("13 bands", []), ("[B04, B03, B02, B08]", SUBSET)):
        for share, share_args in (("100%", []), ("10%", TEN_PERCENT)):
            tag = f"{'sub' if band_args else 'all'}{share.rstrip('%')}"
            scratch = runs(f"scratch_{tag}", [*band_args, *share_args])
            tuned = runs(f"pretrained_{tag}", [*band_args, *share_args, *weights])
            table.append(row(f"{bands}, {share} of the chips, from scratch", scratch))
            table.append(row(f"{bands}, {share} of the chips, from the Sen1Floods11 run", tuned))
    norms = ["| norm on the pretrained encoder | batch | val mIoU (mean ± std, 3 seeds) | per seed |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for norm in ("batchnorm", "frozenbatchnorm", "groupnorm"):
        for batch in (2, 8):
            found = runs(f"norm_{norm}_b{batch}", [*weights, f"norm={norm}", f"data.batch_size={batch}"])
            norms.append(row(f"{norm} | {batch}", found))
    options = ["| pretrained encoder, 10% of the chips | val mIoU (mean ± std, 3 seeds) | per seed |",
               "|---|---:|---:|"]  # fmt: skip
    for label, extra in (("as it is", []), ("encoder.lr_mult=0.1", ["encoder.lr_mult=0.1"]),
                         ("encoder.freeze_epochs=1", ["encoder.freeze_epochs=1"])):  # fmt: skip
        name = "pretrained_all10" if not extra else f"options_{extra[0].split('.')[1].replace('=', '')}"
        options.append(row(label, runs(name, [*TEN_PERCENT, *weights, *extra])))
    encoder_only = save_encoder(os.path.join(args.runs, "source_s1f11/seed0/best.pt"))
    alone = ["| norm, encoder-only weights, batch 2 | val mIoU (mean ± std, 3 seeds) | per seed |",
             "|---|---:|---:|"]  # fmt: skip
    for norm in ("batchnorm", "frozenbatchnorm"):
        found = runs(f"encoder_{norm}_b2", [*encoder_only, f"norm={norm}", "data.batch_size=2"])
        alone.append(row(norm, found))
    majority = train("scratch_all100", TARGET, 0, args.runs)["majority_baseline_miou"]
    parts = [*table, "", f"Majority-class baseline: val mIoU {majority:.3f}.", "", *norms, "", *options, "",
             *alone]  # fmt: skip
    text = "\n".join(parts) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write_text(args.output, text, "transfer table")
    print(text)


if __name__ == "__main__":
    main()
