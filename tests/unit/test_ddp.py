"""2-process DDP on CPU (gloo), started as torchrun starts ranks: RANK, WORLD_SIZE, MASTER_* variables."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate

from conftest import free_port, tiny_train_cfg
from geoseg.config import as_dict
from geoseg.data.build import build_split, load_scenes, train_stats
from geoseg.data.dataset import ChipDataset
from geoseg.engine import fit as fit_module
from geoseg.engine.checkpoint import load_checkpoint
from geoseg.engine.distributed import DistInfo
from geoseg.engine.evaluate import evaluate
from geoseg.models.build import model_from_config

WORLD = 2
EPOCHS = 2


def _rank_main(rank: int, port: int, cfg, out: str) -> None:
    """One rank: record the training chips it reads and its final weights, then save them for the test."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)  # two ranks on a small CI machine: no oversubscription
    seen: list[tuple[int, int, int, int]] = []
    read = ChipDataset.__getitems__

    training = [True]  # the end-of-run diagnostics read training chips again (BN recalibration)

    def spy(self, chips):
        if self.augment is not None and training[0]:  # only the training dataset augments
            seen.extend(tuple(c) for c in chips)
        return read(self, chips)

    ChipDataset.__getitems__ = spy
    final = {}
    diagnose = fit_module.run_diagnostics

    def keep_weights(run):
        training[0] = False
        final.update({k: v.clone() for k, v in run.model.state_dict().items()})
        return diagnose(run)

    fit_module.run_diagnostics = keep_weights
    summary = fit_module.fit(cfg, out)
    torch.save({"chips": seen, "state": final, "summary": summary}, os.path.join(out, f"rank{rank}.pt"))


def test_two_rank_ddp_agrees_shards_chips_and_reduces_the_confusion_matrix(demo_root, tmp_path):
    diagnostics = ("trainer.diagnostics.train_max_chips=256", "trainer.diagnostics.bn_statistics=true")
    cfg = tiny_train_cfg(demo_root, f"trainer.max_epochs={EPOCHS}", "data.chips_per_epoch=16", *diagnostics)
    mp.spawn(_rank_main, args=(free_port(), cfg, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

    # identical parameters and buffers on both ranks after 2 epochs of steps
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key

    # per epoch: each rank reads 8 chips, none read by the other, together the sampler's epoch
    per_epoch = 16 // WORLD
    assert [len(r["chips"]) for r in ranks] == [per_epoch * EPOCHS] * WORLD
    for epoch in range(EPOCHS):
        shards = [set(r["chips"][epoch * per_epoch : (epoch + 1) * per_epoch]) for r in ranks]
        assert len(shards[0]) == per_epoch and not shards[0] & shards[1]

    # only rank 0 logs: one row per step
    rows = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert len(rows) == ranks[0]["summary"]["steps"] == EPOCHS * per_epoch // 4

    # the all-reduced validation confusion matrix equals one process evaluating every val chip
    summary = ranks[0]["summary"]
    assert (
        summary["world_size"] == WORLD and summary["global_batch_size"] == 2 * summary["batch_size_per_gpu"]
    )
    data = as_dict(cfg.data)
    stats = train_stats(data, progress=False)
    model = model_from_config(cfg, len(stats.bands), 4, stats)
    model.load_state_dict(load_checkpoint(Path(tmp_path) / "last.pt")["model"])
    model = model.to(memory_format=torch.channels_last)  # as the run evaluated it (channels_last: auto):
    # another conv layout rounds differently and flips an argmax near-tie now and then
    val = build_split(data, "val", stats, None, seed=0, scenes=load_scenes(data, "val"))
    single = evaluate(
        model, val.loader, instantiate(cfg.loss), ["a", "b", "c", "d"], 255, DistInfo(), channels_last=True
    )
    assert summary["val"]["confusion"] == single["confusion"]
    assert sum(map(sum, single["confusion"])) > 0

    # the end-of-run diagnostics are all-reduced too: every rank reports the same numbers
    other = ranks[1]["summary"]
    assert summary["bn_eval"] == other["bn_eval"] and summary["train_eval"] == other["train_eval"]
    assert summary["bn_eval"]["recalibration_batches"] >= 1


def _slurm_rank(rank: int, port: int, cfg, out: str) -> None:
    """One srun task: only SLURM's variables, the rendezvous address from the launching node."""
    torch.set_num_threads(1)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR"):
        os.environ.pop(key, None)
    os.environ.update(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS=str(WORLD),
                      SLURM_LAUNCH_NODE_IPADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    summary = fit_module.fit(cfg, out)
    torch.save(summary, os.path.join(out, f"slurm{rank}.pt"))


def test_srun_tasks_form_one_ddp_run_from_slurm_variables(demo_root, tmp_path):
    cfg = tiny_train_cfg(demo_root, "trainer.max_steps=1")
    mp.spawn(_slurm_rank, args=(free_port(), cfg, str(tmp_path)), nprocs=WORLD, join=True)
    summaries = [torch.load(tmp_path / f"slurm{r}.pt", weights_only=False) for r in range(WORLD)]
    assert [s["world_size"] for s in summaries] == [WORLD, WORLD]
    assert summaries[0]["val"]["confusion"] == summaries[1]["val"]["confusion"]
