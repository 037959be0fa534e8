"""Unit tests of the engine's small pieces: metrics, losses, schedules, checkpoints, run set-up, logs."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geoseg.device import autocast_dtype, pick_device
from geoseg.engine import checkpoint as ckpt
from geoseg.engine.distributed import env_ranks, slurm_rendezvous
from geoseg.engine.log import RunLogger, flatten, peak_memory_mb, truncate_jsonl
from geoseg.engine.losses import CrossEntropy, Dice, WeightedSum
from geoseg.engine.metrics import ConfusionMatrix, compute_metrics, majority_baseline
from geoseg.engine.runtime import resume_path
from geoseg.engine.schedule import WarmupSchedule, build_scheduler
from geoseg.engine.state import TrainerOptions
from geoseg.errors import GeosegError
from geoseg.io import json_safe

CPU = torch.device("cpu")
NAMES = ["water", "forest", "urban", "snow"]


def hand_matrix() -> ConfusionMatrix:
    # kept (target, pred) pairs: (0,0) x3, (0,1), (1,1) x2, (2,2), (2,0); 255, 7 and -1 targets are skipped
    target = torch.tensor([0, 0, 0, 1, 1, 2, 255, 7, 2, 0, -1])
    pred = torch.tensor([0, 0, 1, 1, 1, 2, 0, 2, 0, 0, 3])
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(pred[:5].reshape(1, 5), target[:5].reshape(1, 5))  # two batches accumulate
    cm.update(pred[5:], target[5:])
    return cm


def test_confusion_matrix_counts_and_skips_ignored_and_out_of_range():
    expected = torch.tensor([[3, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    cm = hand_matrix()
    assert torch.equal(cm.matrix, expected)
    cm.reset()
    assert int(cm.matrix.sum()) == 0
    cm = ConfusionMatrix(3, ignore_index=1)  # an in-range ignore_index is skipped too
    cm.update(torch.tensor([0, 1, 2, 1]), torch.tensor([1, 1, 0, 2]))
    assert torch.equal(cm.matrix, torch.tensor([[0, 0, 1], [0, 0, 0], [0, 1, 0]]))


def test_compute_metrics_and_majority_baseline_by_hand():
    m = compute_metrics(hand_matrix().matrix, NAMES)
    # tp = [3, 2, 1, 0], fp = [1, 1, 0, 0], fn = [1, 0, 1, 0]
    iou = {"water": 3 / 5, "forest": 2 / 3, "urban": 1 / 2}
    f1 = {"water": 6 / 8, "forest": 4 / 5, "urban": 2 / 3}
    assert [m["iou"][k] for k in iou] == pytest.approx(list(iou.values()))
    assert [m["f1"][k] for k in f1] == pytest.approx(list(f1.values()))
    assert math.isnan(m["iou"]["snow"]) and math.isnan(m["f1"]["snow"])
    assert (m["miou"], m["mf1"]) == pytest.approx((sum(iou.values()) / 3, sum(f1.values()) / 3))
    assert m["accuracy"] == pytest.approx(6 / 8) and m["pixels"] == 8
    only_predicted = compute_metrics(torch.tensor([[2, 2], [0, 0]]), ["a", "b"])  # "b" never true
    assert only_predicted["iou"]["b"] == 0.0 and only_predicted["miou"] == pytest.approx(0.25)
    m = majority_baseline(hand_matrix().matrix, NAMES)  # true counts [4, 2, 2, 0] -> predict water
    assert m["iou"]["water"] == pytest.approx(4 / 8)
    assert m["iou"]["forest"] == 0.0 and m["iou"]["urban"] == 0.0 and math.isnan(m["iou"]["snow"])
    assert m["miou"] == pytest.approx(0.5 / 3) and m["accuracy"] == pytest.approx(0.5)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    target[0, :2] = 255
    return logits, target


def test_cross_entropy_matches_torch_uint8_and_class_weights():
    logits, target = batch()
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(CrossEntropy()(logits, target), expected)
    assert torch.allclose(CrossEntropy()(logits, target.to(torch.uint8)), expected)
    weighted = CrossEntropy(class_weights=[1.0, 5.0, 0.2])(logits, target)
    w = torch.tensor([1.0, 5.0, 0.2])
    assert torch.allclose(weighted, F.cross_entropy(logits, target, weight=w, ignore_index=255))
    assert not torch.allclose(weighted, CrossEntropy()(logits, target))
    with pytest.raises(GeosegError, match="class_weights has 2 values"):
        CrossEntropy(class_weights=[1.0, 2.0])(logits, target)


def confident(target: torch.Tensor, shift: int = 0) -> torch.Tensor:
    return 20.0 * F.one_hot((target.clamp(max=2) + shift) % 3, 3).permute(0, 3, 1, 2).float()


def test_dice_perfect_inverted_and_ignored_pixels():
    _, target = batch()
    assert float(Dice()(confident(target), target)) < 1e-3
    assert float(Dice()(confident(target, shift=1), target)) > 0.5
    logits, _ = batch(1)
    changed = logits.clone()
    changed[0, :, :2] = torch.randn(3, 2, 8) * 50  # only the ignored rows differ
    assert torch.allclose(Dice()(logits, target), Dice()(changed, target))
    assert not torch.allclose(Dice()(logits, target), Dice()(batch(2)[0], target))


def test_dice_counts_absent_classes_as_zero_as_documented():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[:, :2] = 1  # classes 0 and 1 present, class 2 absent
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 2] = 20.0  # everything predicted as the absent class: Dice 0 for both present classes
    assert float(Dice()(logits, target)) == pytest.approx(2 / 3, abs=1e-3)  # (1 + 1 + 0) / 3 classes


@pytest.mark.parametrize(
    ("options", "message"),
    [({"label_smoothing": 2}, r"^loss.label_smoothing=2 must be a number in \[0, 1\], e.g. 0.1$"),
     ({"label_smoothing": -0.1}, r"^loss.label_smoothing=-0.1 must be"),
     ({"class_weights": [1, -1, 1]}, r"^loss.class_weights=\[1, -1, 1\] must be numbers >= 0, not all 0"),
     ({"class_weights": [0, 0, 0]}, r"^loss.class_weights=\[0, 0, 0\] must be"),
     ({"class_weights": [1, float("nan"), 1]}, r"^loss.class_weights=\[1, nan, 1\] must be")],
)  # fmt: skip
def test_bad_cross_entropy_options_are_refused_when_built(options, message):
    """Caught when the loss is built, before a step: torch would raise mid-step (smoothing) or train on
    a loss that rewards a class (negative weight) or is 0/0 (all weights 0)."""
    with pytest.raises(GeosegError, match=message):
        CrossEntropy(**options)
    logits, target = batch()
    assert torch.isfinite(CrossEntropy(class_weights=[0, 1, 1], label_smoothing=1.0)(logits, target))


def test_weighted_sum_and_bf16_logits_give_float32():
    logits, target = batch()
    ce, dice = CrossEntropy(), Dice()
    total = WeightedSum([ce, dice], [0.7, 0.3])(logits, target)
    assert torch.allclose(total, 0.7 * ce(logits, target) + 0.3 * dice(logits, target))
    with pytest.raises(GeosegError, match=r"^loss.weights has 1 value\(s\) for 2 loss.losses; one weight"):
        WeightedSum([ce, dice], [1.0])
    for loss in (ce, dice, WeightedSum([ce, dice], [1.0, 1.0])):
        assert loss(logits.bfloat16(), target).dtype == torch.float32


def cosine_ref(step: int, total: int, warm: int, floor: float) -> float:
    if step < warm:
        return (step + 1) / (warm + 1)
    p = min(1.0, (step - warm) / (total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


def test_warmup_schedule_shapes():
    s = WarmupSchedule(10, "cosine", warmup_steps=4, min_lr_ratio=0.1)
    assert [s(i) for i in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert s(4) == pytest.approx(1.0) and s(10) == pytest.approx(0.1) and s(50) == pytest.approx(0.1)
    assert s(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 3 / 6)))
    poly = WarmupSchedule(100, "poly", power=2.0)
    steps = (0, 25, 60, 100)
    assert [poly(i) for i in steps] == pytest.approx([(1 - i / 100) ** 2.0 for i in steps])
    const = WarmupSchedule(10, "constant", warmup_steps=1)
    assert [const(i) for i in (0, 1, 5, 9)] == pytest.approx([0.5, 1.0, 1.0, 1.0])
    with pytest.raises(GeosegError, match="linear"):
        WarmupSchedule(10, "linear")
    with pytest.raises(GeosegError):
        WarmupSchedule(0)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"warmup_fraction": 1.5}, r"^sched.warmup_fraction=1.5 must be a fraction of the run, in \[0, 1\)$"),
     ({"warmup_fraction": -0.1}, r"^sched.warmup_fraction=-0.1 must be"),
     ({"warmup_steps": -3}, r"^sched.warmup_steps=-3 must be a whole number >= 0, or null$"),
     ({"warmup_steps": 2.5}, r"^sched.warmup_steps=2.5 must be"),
     ({"min_lr_ratio": 2}, r"^sched.min_lr_ratio=2 must be in \[0, 1\]: the final LR over the peak LR$"),
     ({"kind": "poly", "power": 0}, r"^sched.power=0 must be a positive number")],
)  # fmt: skip
def test_bad_schedule_options_name_the_option(options, message):
    """Out of range they would bend the LR curve silently (a warmup past the run's end, an LR that rises)."""
    with pytest.raises(GeosegError, match=message):
        build_scheduler(sgd(), 20, **options)
    assert build_scheduler(sgd(), 20, warmup_fraction=0.0, warmup_steps=0, min_lr_ratio=1.0) is not None


def sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_build_scheduler_follows_formula():
    opt = sgd()
    sched = build_scheduler(opt, 20, "cosine", warmup_fraction=0.25, min_lr_ratio=0.1)  # 5 warmup steps
    for n in range(21):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * cosine_ref(n, 20, 5, 0.1)), n
        opt.step()
        sched.step()


def test_scheduler_state_round_trips_weights_only(tmp_path):
    opt = sgd()
    sched = build_scheduler(opt, 20, "cosine", warmup_steps=3, min_lr_ratio=0.05)
    for _ in range(7):
        opt.step()
        sched.step()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    opt2 = sgd(lr=3.0)
    sched2 = build_scheduler(opt2, 999, "constant")  # different curve, replaced by the saved one
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    for n in range(7, 20):
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
        assert opt2.param_groups[0]["lr"] == pytest.approx(0.1 * cosine_ref(n, 20, 3, 0.05))
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()


def full_state() -> dict:
    return {
        "model": {"w": torch.arange(6.0).reshape(2, 3)}, "meta": {"arch": "unet", "classes": 3},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "scheduler": {"last_epoch": 4}, "epoch": 2, "step": 40, "rng": [ckpt.rng_state(CPU)],
    }  # fmt: skip


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "run" / "last.pt"
    ckpt.save_checkpoint(path, full_state())
    state = ckpt.load_checkpoint(path)
    assert set(ckpt.REQUIRED) <= set(state)
    assert torch.equal(state["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert state["meta"] == {"arch": "unet", "classes": 3} and (state["epoch"], state["step"]) == (2, 40)
    assert os.listdir(path.parent) == ["last.pt"]  # no temporary file left behind


def test_checkpoint_bad_files_raise_with_path(tmp_path):
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(good, full_state())
    data = good.read_bytes()
    cut, noise, plain, partial = (tmp_path / f"{name}.pt" for name in ("cut", "noise", "plain", "partial"))
    cut.write_bytes(data[: len(data) // 2])
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"model": {}}, plain)
    torch.save({k: v for k, v in torch.load(good, weights_only=True).items() if k != "rng"}, partial)
    for path in (tmp_path / "missing.pt", cut, noise, plain, partial):
        with pytest.raises(GeosegError) as err:
            ckpt.load_checkpoint(path)
        assert str(path) in str(err.value)
    with pytest.raises(GeosegError, match="lacks rng"):
        ckpt.load_checkpoint(partial)


@pytest.mark.parametrize("content", [b"hello world\n", b".gitignore", b"\x80\x02}q\x00."])
def test_checkpoint_text_or_junk_file_raises_geoseg_error(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(GeosegError, match=r"notes\.pt"):
        ckpt.load_checkpoint(path)


def test_checkpoint_with_code_is_refused(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))

    torch.save({**full_state(), "format": "geoseg-checkpoint", "version": 1, "x": Payload()}, path)
    with pytest.raises(GeosegError, match="weights_only") as err:
        ckpt.load_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_failed_save_keeps_old_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint(path, full_state())
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 -- whatever pickle raises for a lambda
        ckpt.save_checkpoint(path, {**full_state(), "step": 41, "bad": lambda: 0})
    assert path.read_bytes() == before and ckpt.load_checkpoint(path)["step"] == 40
    assert os.listdir(tmp_path) == ["last.pt"]


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.standard_normal(), \
        torch.rand(3).tolist()  # fmt: skip


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    random.gauss(0, 1)
    np.random.standard_normal()  # leave a cached Gaussian in both generators
    state = ckpt.rng_state(CPU)
    first = draws()
    ckpt.set_rng_state(state, CPU)
    assert draws() == first
    torch.save(state, tmp_path / "rng.pt")
    draws()
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), CPU)
    assert draws() == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rng_state_restores_from_checkpoint_loaded_onto_gpu(tmp_path):
    device = torch.device("cuda", 0)  # states loaded onto the GPU still restore
    ckpt.save_checkpoint(tmp_path / "last.pt", {**full_state(), "rng": [ckpt.rng_state(device)]})
    first = draws()
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "last.pt", map_location=device)["rng"][0], device)
    assert draws() == first


def test_check_same_model_names_differing_field():
    meta = {"arch": "unet", "encoder": "resnet18", "in_channels": 4, "classes": 3, "norm": "batchnorm"}
    ckpt.check_same_model(meta, dict(meta), "x.pt")
    with pytest.raises(GeosegError, match=r"encoder: 'resnet18' vs 'resnet34'") as err:
        ckpt.check_same_model(meta, {**meta, "encoder": "resnet34"}, "x.pt")
    assert "x.pt" in str(err.value) and "arch" not in str(err.value)


def test_env_ranks_and_slurm_rendezvous():
    torchrun = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}
    slurm = {"SLURM_PROCID": "2", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4"}
    assert env_ranks(torchrun) == (3, 1, 8, "torchrun")
    assert env_ranks(slurm) == (2, 1, 4, "slurm")
    assert env_ranks({**slurm, "SLURM_NTASKS": "1"}) == (0, 0, 1, "single")
    assert env_ranks({**slurm, **torchrun}) == (3, 1, 8, "torchrun")
    assert env_ranks({}) == (0, 0, 1, "single")
    env = {"SLURM_LAUNCH_NODE_IPADDR": "10.0.0.5", "SLURM_JOB_ID": "1234567"}
    assert slurm_rendezvous(env) == {"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": str(20000 + 14567)}
    explicit = {**env, "MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    assert slurm_rendezvous(explicit) == {"MASTER_ADDR": "node1", "MASTER_PORT": "29500"}
    with pytest.raises(GeosegError, match="MASTER_ADDR"):
        slurm_rendezvous({"SLURM_JOB_ID": "1"})


def test_pick_device_and_autocast_dtype_on_cpu(monkeypatch):
    assert pick_device("cpu", 3) == CPU
    with pytest.raises(GeosegError, match="bogus"):
        pick_device("bogus", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto", 0) == CPU
    with pytest.raises(GeosegError, match="no CUDA"):
        pick_device("cuda", 0)
    with pytest.raises(GeosegError, match="bf16"):
        autocast_dtype("fp16", CPU)
    assert autocast_dtype("bf16", CPU) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert autocast_dtype("fp32", CPU) is None and autocast_dtype("auto", CPU) is None
    with pytest.raises(GeosegError, match="fp8"):
        autocast_dtype("fp8", CPU)


def test_resume_path_and_trainer_options(tmp_path):
    assert resume_path(None, str(tmp_path)) is None
    assert resume_path("auto", str(tmp_path)) is None
    (tmp_path / "last.pt").write_bytes(b"x")
    assert resume_path("auto", str(tmp_path)) == str(tmp_path / "last.pt")
    assert resume_path(str(tmp_path / "last.pt"), "elsewhere") == str(tmp_path / "last.pt")
    with pytest.raises(GeosegError, match="does not exist"):
        resume_path(str(tmp_path / "nope.pt"), str(tmp_path))
    ok = {"max_epochs": 2, "grad_accum_steps": 1, "eval_every": 1, "checkpoint_every": 1, "log_every": 10,
          "max_nonfinite_steps": 10}  # fmt: skip
    TrainerOptions.from_config(ok)
    with pytest.raises(GeosegError, match=r"trainer.max_nonfinite_steps=0 must be a whole number >= 1"):
        TrainerOptions.from_config({**ok, "max_nonfinite_steps": 0})
    with pytest.raises(GeosegError, match=r"trainer.log_every='ten' must be a whole number >= 1"):
        TrainerOptions.from_config({**ok, "log_every": "ten"})
    TrainerOptions.from_config({**ok, "max_steps": None})
    with pytest.raises(GeosegError, match="max_epochs=0"):
        TrainerOptions.from_config({**ok, "max_epochs": 0})
    with pytest.raises(GeosegError, match="max_steps"):
        TrainerOptions.from_config({**ok, "max_steps": 0})
    TrainerOptions.from_config({**ok, "diagnostics": {"train_max_chips": 0, "bn_statistics": False}})
    with pytest.raises(GeosegError) as err:
        TrainerOptions.from_config({**ok, "diagnostics": {"train_max_chips": -5}})
    assert str(err.value) == "trainer.diagnostics.train_max_chips=-5 must be a whole number >= 0 (0 = skip)"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("grad_clip", -1.0, r"^trainer.grad_clip=-1.0 must be a positive max gradient norm, or null"),
     ("grad_clip", "inf", r"^trainer.grad_clip='inf' must be"),
     ("tensorboard_images", -1, r"^trainer.tensorboard_images=-1 must be a whole number >= 0 \(0 = none\)$"),
     ("progress_interval_s", -5, r"^trainer.progress_interval_s=-5 must be a number of seconds >= 0"),
     ("compile", "no", r"^trainer.compile='no' must be true or false$"),  # a truthy string: it would compile
     ("precise_bn", {"enabled": "off"}, r"^trainer.precise_bn.enabled='off' must be true or false$")],
)  # fmt: skip
def test_check_trainer_refuses_bad_clip_image_count_interval_or_flag(key, value, message):
    """A negative grad_clip would not fail anywhere: torch scales the gradients by it (gradient ascent)."""
    ok = {"max_epochs": 2, "grad_accum_steps": 1, "eval_every": 1, "checkpoint_every": 1, "log_every": 10,
          "max_nonfinite_steps": 10}  # fmt: skip
    with pytest.raises(GeosegError, match=message):
        TrainerOptions.from_config({**ok, key: value})
    quiet = {"grad_clip": None, "tensorboard_images": 0, "progress_interval_s": 0}
    options = TrainerOptions.from_config({**ok, **quiet})
    assert (options.grad_clip, options.tensorboard_images, options.progress_interval_s) == (None, 0, 0.0)
    assert TrainerOptions.from_config(ok).progress_interval_s == 60.0  # the default when the key is absent


def test_flatten_and_json_safe():
    row = {"step": 3, "ok": True, "val": {"miou": 0.5, "name": "x", "iou": {"water": 1}, "none": None}}
    assert flatten(row, "epoch/") == {"epoch/step": 3.0, "epoch/val/miou": 0.5, "epoch/val/iou/water": 1.0}
    safe = json_safe({"a": math.nan, "b": [math.inf, 1.5, (-math.inf,)], "c": {"d": math.nan}, "e": "s"})
    assert safe == {"a": None, "b": [None, 1.5, [None]], "c": {"d": None}, "e": "s"}
    json.dumps(safe, allow_nan=False)


def strict_rows(path) -> list[dict]:
    return [json.loads(line, parse_constant=pytest.fail) for line in path.read_text().splitlines()]


def test_truncate_jsonl(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"kind": "train", "step": s}) for s in range(1, 6)]
    path.write_text("\n".join(rows) + "\n\n" + '{"kind": "note"}\n' + '{"kind": "train", "st')
    truncate_jsonl(str(path), 3)
    assert strict_rows(path) == [{"kind": "train", "step": s} for s in (1, 2, 3)] + [{"kind": "note"}]
    truncate_jsonl(str(tmp_path / "absent.jsonl"), 3)
    assert not (tmp_path / "absent.jsonl").exists()


def test_run_logger(tmp_path):
    (off := tmp_path / "off").mkdir()
    quiet = RunLogger(str(off), enabled=False)
    quiet.log({"kind": "train", "step": 1, "loss": 1.0})
    quiet.close()
    assert os.listdir(off) == []

    (tmp_path / "metrics.jsonl").write_text("".join(f'{{"kind": "t", "step": {s}}}\n' for s in (1, 2, 3)))
    logger = RunLogger(str(tmp_path), enabled=True, tensorboard=False, resume_step=2)
    logger.log({"kind": "train", "step": 3, "loss": math.nan, "val": {"miou": 0.25}})
    logger.log({"kind": "epoch", "step": 4, "lr": 1e-3})
    logger.close()
    assert strict_rows(tmp_path / "metrics.jsonl") == [
        {"kind": "t", "step": 1}, {"kind": "t", "step": 2},
        {"kind": "train", "step": 3, "loss": None, "val": {"miou": 0.25}},
        {"kind": "epoch", "step": 4, "lr": 1e-3},
    ]  # fmt: skip
    assert not (tmp_path / "tensorboard").exists()


def test_truncate_jsonl_repairs_a_lost_newline_and_skips_null_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "x", "step": null}\n{"step": 1}\n{"step": 2}')  # crash lost the last newline
    truncate_jsonl(str(path), 5)
    with open(path, "a") as fh:
        fh.write('{"step": 6}\n')
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [None, 1, 2, 6]


def test_stray_run_folder_of_another_rank_is_removed_only_when_it_holds_hydra_files(tmp_path):
    from geoseg.engine.run import remove_stray_run_dir

    shared, stray, busy = tmp_path / "a" / "t0", tmp_path / "b" / "t1", tmp_path / "c" / "t2"
    for folder in (shared, stray, busy):
        (folder / ".hydra").mkdir(parents=True)
        (folder / "train.log").write_text("")
    (busy / "last.pt").write_bytes(b"x")
    remove_stray_run_dir(str(stray), str(shared))
    remove_stray_run_dir(str(busy), str(shared))
    remove_stray_run_dir(str(shared), str(shared))
    assert not stray.exists() and not stray.parent.exists()
    assert (busy / "last.pt").exists() and shared.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's /proc/self/status")
def test_peak_memory_is_the_process_own_not_its_launchers() -> None:
    """A child's peak RSS must not inherit the parent's high-water mark (as ru_maxrss does across exec)."""
    big = np.ones(1_500_000_000 // 8)  # touch 1.5 GB so this process's peak is far above a fresh one's
    parent_peak = peak_memory_mb(torch.device("cpu"))
    assert parent_peak > 1400
    del big
    code = "import torch, geoseg.engine.log as g; print(g.peak_memory_mb(torch.device('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    child_peak = float(out.split()[-1])
    assert 10 < child_peak < parent_peak - 1000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's /proc/self/status")
def test_reset_peak_memory_starts_a_sweep_jobs_peak_afresh() -> None:
    """Sweep jobs share one process: each must report its own peak, not the largest job's so far."""
    code = (
        "import numpy as np, torch, geoseg.engine.log as g\n"
        "cpu = torch.device('cpu')\n"
        "big = np.ones(800_000_000 // 8); before = g.peak_memory_mb(cpu); del big\n"
        "g.reset_peak_memory(cpu); print(before, g.peak_memory_mb(cpu))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split()[-2:])
    assert before > 750 and after < before - 600
