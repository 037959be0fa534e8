"""The training loop end to end on tiny demo scenes: a short fit, overfitting, exact resume, precision."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from conftest import run_error, tiny_train_cfg
from geoseg.config import as_dict
from geoseg.data.build import build_split, train_stats
from geoseg.engine import fit as fit_module
from geoseg.engine.checkpoint import load_checkpoint
from geoseg.engine.fit import fit
from geoseg.engine.optim import build_optimizer
from geoseg.errors import GeosegError
from geoseg.models.build import model_from_config


def tensorboard_tags(folder: Path) -> dict[str, set[str]]:
    """The scalar and image tags of every event file under ``folder``, and whether hparams were written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set[str]] = {"scalars": set(), "images": set(), "hparams": set()}
    for path in folder.glob("events.out.tfevents.*"):
        events = EventAccumulator(str(path), size_guidance={"images": 0})
        events.Reload()
        tags["scalars"] |= set(events.Tags()["scalars"])
        tags["images"] |= set(events.Tags()["images"])
        tags["hparams"] |= {k for k in events.summary_metadata if k.startswith("_hparams_")}
    return tags


def test_two_step_fit_writes_checkpoints_logs_and_summary(demo_root, tmp_path):
    cfg = tiny_train_cfg(demo_root, "trainer.max_steps=2", "trainer.tensorboard=true")
    summary = fit(cfg, str(tmp_path))
    assert summary["steps"] == 2 and summary["epochs"] == 1
    assert {"last.pt", "best.pt", "metrics.jsonl", "summary.json", "stats.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    tags = tensorboard_tags(tmp_path / "tensorboard")
    assert {"train/loss", "epoch/val/miou"} <= tags["scalars"] and "epoch/val/pixels" not in tags["scalars"]
    assert tags["images"] == {"val/examples"}  # input, label and prediction of fixed val chips
    assert {"hparam/val_miou", "hparam/best_miou"} <= tags["scalars"] and tags["hparams"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    epoch = [r for r in rows if r["kind"] == "epoch"]
    assert len(epoch) == 1 and 0.0 <= epoch[0]["val"]["miou"] <= 1.0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["batch_size_per_gpu"] == 4 and saved["global_batch_size"] == 4
    assert saved["norm_summary"]["after"] == {"BatchNorm2d": saved["norm_summary"]["after"]["BatchNorm2d"]}
    assert set(saved["val"]["iou"]) == {"water", "vegetation", "bare_soil", "built_up"}
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["classes"] == ["water", "vegetation", "bare_soil", "built_up"]
    assert ckpt["meta"]["arch"] == "unet" and ckpt["stats"]["bands"] == ckpt["meta"]["bands"]
    assert ckpt["step"] == 2 and ckpt["config"]["data"]["chip_size"] == 32
    best = load_checkpoint(tmp_path / "best.pt")  # weights only: for predict, export and fine-tuning
    assert best["weights_only"] and best["optimizer"] == {} and best["rng"] == [] and best["step"] == 2
    assert all(torch.equal(best["model"][k], v) for k, v in ckpt["model"].items())
    assert (tmp_path / "best.pt").stat().st_size < 0.6 * (tmp_path / "last.pt").stat().st_size


def test_a_weights_only_best_checkpoint_fine_tunes_but_does_not_resume(demo_root, tmp_path, caplog):
    fit(tiny_train_cfg(demo_root, "trainer.max_steps=1"), str(tmp_path / "a"))
    best = tmp_path / "a" / "best.pt"
    with pytest.raises(GeosegError, match=r"holds weights only .* resume from .*a/last.pt, or fine-tune"):
        fit(tiny_train_cfg(demo_root, "trainer.max_steps=2", f"trainer.resume={best}"), str(tmp_path / "b"))
    tuned = tiny_train_cfg(demo_root, "trainer.max_steps=1", f"encoder.weights={best}")
    caplog.set_level(logging.INFO, logger="geoseg.models.weights")
    summary = fit(tuned, str(tmp_path / "c"))
    assert summary["steps"] == 1
    assert f"tensors from the geoseg checkpoint {best}" in caplog.text  # says what it started from


def test_loss_falls_when_overfitting_one_batch(demo_root):
    cfg = tiny_train_cfg(demo_root, "aug=none", "optim.optimizer.lr=3e-3")
    data = as_dict(cfg.data)
    stats = train_stats(data, progress=False)
    batch = next(iter(build_split(data, "train", stats, None, seed=0).loader))
    torch.manual_seed(0)
    model = model_from_config(cfg, len(stats.bands), 4, stats)
    optimizer, loss_fn = build_optimizer(cfg.optim, model), instantiate(cfg.loss)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images, target = batch["image"], batch["mask"].long()
    losses = []
    for _ in range(30):
        loss = loss_fn(model(images), target)
        loss.backward()
        fit_module.optimizer_step(model, optimizer, scaler, clip=1.0)
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


class Interrupt(Exception):
    """Stands in for a kill right after a checkpoint."""


def test_resume_after_epoch_one_matches_an_uninterrupted_run(demo_root, tmp_path, monkeypatch, caplog):
    """Resumed after epoch 1, the run ends with the uninterrupted run's weights and metrics; resumed
    again once finished, it trains nothing and says so."""
    overrides = ("trainer.max_epochs=2", "seed=3")
    full = fit(tiny_train_cfg(demo_root, *overrides), str(tmp_path / "full"))

    real_save = fit_module.save_checkpoints

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Interrupt

    monkeypatch.setattr(fit_module, "save_checkpoints", save_then_die)
    with pytest.raises(Interrupt):
        fit(tiny_train_cfg(demo_root, *overrides), str(tmp_path / "cut"))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(fit_module, "save_checkpoints", real_save)
    resumed = fit(tiny_train_cfg(demo_root, *overrides, "trainer.resume=auto"), str(tmp_path / "cut"))

    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert resumed["steps"] == full["steps"] and resumed["epochs"] == 2
    assert resumed["val"]["confusion"] == full["val"]["confusion"]
    assert resumed["val"]["miou"] == pytest.approx(full["val"]["miou"])
    rows = [json.loads(r) for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 9))

    caplog.set_level(logging.INFO, logger="geoseg.engine.fit")
    again = fit(tiny_train_cfg(demo_root, *overrides, "trainer.resume=auto"), str(tmp_path / "cut"))
    assert "this run had already finished (epoch 2 of 2, step 8): nothing is left to train" in caplog.text
    assert again["steps"] == 8 and again["val"]["confusion"] == full["val"]["confusion"]
    rows = [json.loads(r) for r in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 9))


def test_corrupt_last_checkpoint_is_reported_and_left_alone(demo_root, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(GeosegError, match="truncated or corrupt"):
        fit(tiny_train_cfg(demo_root, "trainer.resume=auto", "trainer.max_steps=1"), str(tmp_path))
    assert (tmp_path / "last.pt").read_bytes() == b"PK\x03\x04 not really a zip"


def test_resume_refuses_a_checkpoint_of_another_model(demo_root, tmp_path):
    fit(tiny_train_cfg(demo_root, "trainer.max_steps=1"), str(tmp_path))
    with pytest.raises(GeosegError, match=r"another model.*norm"):
        fit(
            tiny_train_cfg(demo_root, "trainer.max_steps=2", "norm=groupnorm", "trainer.resume=auto"),
            str(tmp_path),
        )


def test_bf16_autocast_trains_on_cpu(demo_root, tmp_path):
    summary = fit(
        tiny_train_cfg(demo_root, "trainer.amp=bf16", "trainer.max_steps=2", "trainer.channels_last=true"),
        str(tmp_path),
    )
    assert summary["amp"] == "bfloat16"
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if r["kind"] == "train")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_fp16_without_cuda_is_a_clear_error(demo_root, tmp_path):
    with pytest.raises(GeosegError, match=r"fp16 needs a CUDA device; on CPU use trainer\.amp=bf16"):
        fit(tiny_train_cfg(demo_root, "trainer.amp=fp16", "trainer.max_steps=1"), str(tmp_path))


def test_batch_of_one_with_batchnorm_is_refused(demo_root, tmp_path):
    with pytest.raises(GeosegError, match=r"data\.batch_size=1 with BatchNorm2d layers: BatchNorm needs"):
        fit(tiny_train_cfg(demo_root, "data.batch_size=1", "trainer.max_steps=1"), str(tmp_path))
    summary = fit(
        tiny_train_cfg(demo_root, "data.batch_size=1", "norm=groupnorm", "trainer.max_steps=1"),
        str(tmp_path / "gn"),
    )
    assert summary["steps"] == 1


def test_accumulation_clipping_poly_dice_and_precise_bn_run_together(demo_root, tmp_path):
    cfg = tiny_train_cfg(
        demo_root,
        "trainer.grad_accum_steps=2",
        "trainer.grad_clip=0.5",
        "sched=poly",
        "loss=ce_dice",
        "trainer.precise_bn.enabled=true",
        "trainer.precise_bn.num_batches=2",
        "trainer.max_epochs=1",
    )
    summary = fit(cfg, str(tmp_path))
    assert summary["steps"] == 2  # 4 batches / 2 micro-batches per step
    assert summary["effective_batch_size"] == 8
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] >= 0 for r in rows if r["kind"] == "train")


def test_cli_train_reports_user_errors_in_one_line(demo_root, tmp_path, capsys, release_hydra_logging):
    args = [f"data.root={demo_root}", "data.demo=null", f"data.stats_path={demo_root}/stats.json",
            f"hydra.run.dir={tmp_path / 'run'}", "trainer.device=cpu"]  # fmt: skip
    assert run_error(capsys, "train", *args, "trainer.amp=fp16") == (
        "geoseg: error: trainer.amp=fp16 needs a CUDA device; on CPU use trainer.amp=bf16 or fp32"
    )
    assert "trainer.resume=" in run_error(capsys, "train", *args, f"trainer.resume={tmp_path / 'nope.pt'}")


@pytest.mark.slow
def test_train_ddp_script_runs_two_cpu_ranks_into_one_run_folder(demo_root, tmp_path):
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "train_ddp.sh"
    env = {**os.environ, "RUN_DIR": str(tmp_path / "run"), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    args = [f"data.root={demo_root}", "data.demo=null", f"data.stats_path={demo_root}/stats.json",
            "trainer.device=cpu", "trainer.max_steps=2", "data.chips_per_epoch=32", "data.chip_size=32",
            "data.num_workers=0", "trainer.progress=false"]  # fmt: skip
    done = subprocess.run(["bash", str(script), "2", *args], env=env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert not (tmp_path / "outputs").exists()  # no stray per-rank folders


@pytest.mark.slow
def test_torch_compile_trains(demo_root, tmp_path):
    summary = fit(tiny_train_cfg(demo_root, "trainer.compile=true", "trainer.max_steps=2"), str(tmp_path))
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 2 and all(math.isfinite(r["loss"]) for r in rows if r["kind"] == "train")


def test_an_unusable_run_folder_fails_before_any_work(demo_root, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(GeosegError, match=r"cannot write to the run folder '.*file\.txt/run'"):
        fit(tiny_train_cfg(demo_root, "trainer.max_steps=1"), str(blocker / "run"))


def test_every_optimizer_step_accumulates_exactly_grad_accum_steps_batches(demo_root, tmp_path, monkeypatch):
    moved, at_step = [], []
    real_to_device, real_step = fit_module.to_device, fit_module.optimizer_step
    monkeypatch.setattr(fit_module, "to_device", lambda *a: moved.append(1) or real_to_device(*a))
    monkeypatch.setattr(fit_module, "optimizer_step", lambda *a: at_step.append(len(moved)) or real_step(*a))
    # 4 batches per epoch and 3 per step: the 4th batch of an epoch must not leak into the next step
    fit(tiny_train_cfg(demo_root, "trainer.grad_accum_steps=3", "trainer.max_epochs=2"), str(tmp_path))
    assert at_step == [3, 6]


@pytest.mark.parametrize(("norm", "expected"), [("batchnorm", True), ("groupnorm", False)])
def test_channels_last_auto_is_resolved_per_norm_at_build(demo_root, tmp_path, norm, expected):
    from geoseg.engine.run import build_run

    run = build_run(tiny_train_cfg(demo_root, f"norm={norm}", "norm.num_groups=4"
                                   if norm == "groupnorm" else "seed=0"), str(tmp_path))  # fmt: skip
    assert run.options.channels_last == "auto"
    assert run.channels_last is expected
    conv = next(m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d)).weight
    assert conv.is_contiguous(memory_format=torch.channels_last) is expected
