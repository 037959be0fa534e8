"""Non-finite values: NaN/inf pixels are nodata, a NaN loss skips its update, N in a row stop the run."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from conftest import save_tiny_checkpoint, tiny_train_cfg, write_tif
from geoseg.commands.predict import run as predict_run
from geoseg.config import as_dict, config_dir
from geoseg.data.build import build_split, load_scenes, train_stats
from geoseg.engine.checkpoint import load_checkpoint, save_checkpoints
from geoseg.engine.fit import optimizer_step, train
from geoseg.engine.nonfinite import BufferSnapshot
from geoseg.engine.run import build_run
from geoseg.errors import GeosegError


class NanLossOn(nn.Module):
    """The run's loss, but NaN on the chosen optimizer steps (1-based; accumulation 1)."""

    def __init__(self, loss: nn.Module, bad: set[int] | None = None, from_step: int | None = None) -> None:
        super().__init__()
        self.loss, self.bad, self.from_step, self.calls = loss, bad or set(), from_step, 0

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = self.loss(logits, target)
        if not torch.is_grad_enabled():  # validation
            return value
        self.calls += 1
        if self.calls in self.bad or (self.from_step is not None and self.calls >= self.from_step):
            return value * math.nan
        return value


def float_scene_with_nan_and_inf(root: Path) -> tuple[Path, Path]:
    """A float32 3-band scene with a NaN block in band 2 and +inf/-inf blocks, and its label."""
    rng = np.random.default_rng(1)
    img = rng.normal(100, 20, size=(3, 64, 64)).astype(np.float32)
    img[1, :16, :16] = np.nan
    img[0, 40:48, 40:48] = np.inf
    img[2, 50:52, :] = -np.inf
    lab = rng.integers(0, 3, size=(64, 64), dtype=np.uint8)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    image = write_tif(root / "images" / "s.tif", img, tiled=True)
    label = write_tif(root / "labels" / "s.tif", lab)
    return image, label


def bad_pixels(img: np.ndarray) -> np.ndarray:
    return ~np.isfinite(img).all(axis=0)


def test_nan_and_inf_pixels_are_nodata_in_training_chips_and_predictions(tmp_path):
    image, _ = float_scene_with_nan_and_inf(tmp_path / "data")
    with rasterio.open(image) as src:
        raw = src.read()
    cfg = tiny_train_cfg(tmp_path / "data", "data.splits.train.images=images/*.tif",
                         "data.splits.train.labels='labels/{stem}.tif'", "data.chip_size=64")  # fmt: skip
    data = as_dict(cfg.data)
    scenes = load_scenes(data, "train")
    stats = train_stats(data, progress=False, scenes=scenes)
    assert all(math.isfinite(m) for m in stats.mean + stats.std), "statistics skip non-finite pixels"
    split = build_split(data, "train", stats=stats, seed=0, rank=0, world_size=1, augment=None, scenes=scenes)
    chip = split.dataset[split.sampler.epoch_chips()[0]]
    assert torch.isfinite(chip["image"]).all()
    expected = bad_pixels(raw)
    assert np.array_equal(chip["mask"].numpy() == 255, expected)

    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", image)
    out = tmp_path / "pred.tif"
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        pcfg = compose(
            "predict",
            overrides=[
                f"checkpoint={ckpt}",
                f"input={image}",
                f"output={out}",
                "tile=64",
                "overlap=0",
                "device=cpu",
                "progress=false",
                "check_stats=false",
            ],
        )
    predict_run(pcfg)
    with rasterio.open(out) as dst:
        classes, nodata = dst.read(1), dst.nodata
    assert np.array_equal(classes == nodata, expected)


def test_a_nan_loss_skips_its_update_counts_it_and_keeps_bn_statistics_finite(demo_root, tmp_path, caplog):
    run = build_run(tiny_train_cfg(demo_root, "trainer.max_epochs=2", "trainer.max_nonfinite_steps=3"),
                    str(tmp_path))  # fmt: skip
    run.loss_fn = NanLossOn(run.loss_fn, bad={2, 5, 6})
    with caplog.at_level(logging.WARNING):
        summary = train(run, 0.0)
    warnings = [r.getMessage() for r in caplog.records if "non-finite loss" in r.getMessage()]
    assert warnings == [
        "step 2: non-finite loss, update skipped (1 skipped in this run, 1 in a row; the run stops at "
        "trainer.max_nonfinite_steps=3)",
        "step 5: non-finite loss, update skipped (2 skipped in this run, 1 in a row; the run stops at "
        "trainer.max_nonfinite_steps=3)",
        "step 6: non-finite loss, update skipped (3 skipped in this run, 2 in a row; the run stops at "
        "trainer.max_nonfinite_steps=3)",
    ]
    assert summary["nonfinite_steps"] == 3 and summary["steps"] == 8
    state = load_checkpoint(tmp_path / "last.pt")["model"]
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    assert math.isfinite(summary["val"]["loss"])


def test_too_many_nan_steps_in_a_row_stop_with_a_clear_error_and_keep_the_last_good_checkpoint(
    demo_root, tmp_path
):
    run = build_run(tiny_train_cfg(demo_root, "trainer.max_epochs=3", "trainer.max_nonfinite_steps=3"),
                    str(tmp_path))  # fmt: skip
    run.loss_fn = NanLossOn(run.loss_fn, from_step=6)  # epoch 1 is steps 1-4
    last = tmp_path / "last.pt"

    def digest() -> str:
        return hashlib.sha256(last.read_bytes()).hexdigest()

    with pytest.raises(GeosegError) as err:
        train(run, 0.0)
    assert str(err.value) == (
        f"3 optimizer steps in a row had a NaN/inf loss (up to step 8, trainer.max_nonfinite_steps=3); "
        f"training stopped and the last good checkpoint {last} is kept. To fix: lower optim.lr, keep "
        "trainer.grad_clip on, use trainer.amp=bf16 or fp32 instead of fp16, or check the labels and "
        "data.classes"
    )
    saved = load_checkpoint(last)
    assert saved["epoch"] == 1 and saved["step"] == 4
    before = digest()
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())
    assert digest() == before


def test_non_finite_weights_are_never_written_over_last_pt(demo_root, tmp_path):
    run = build_run(tiny_train_cfg(demo_root, "trainer.max_steps=1"), str(tmp_path))
    save_checkpoints(run)
    good = (tmp_path / "last.pt").read_bytes()
    with torch.no_grad():
        next(run.model.parameters()).fill_(math.inf)  # channels_last weights: no flat view
    with pytest.raises(GeosegError) as err:
        save_checkpoints(run)
    assert str(err.value).startswith(
        f"the model holds NaN/inf weights after epoch 0, step 0; training stopped and {tmp_path / 'last.pt'} "
        "keeps the last good weights."
    )
    assert (tmp_path / "last.pt").read_bytes() == good


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
]


@pytest.mark.parametrize("device", DEVICES)
def test_grad_scaler_skips_an_overflowing_fp16_step_and_lowers_its_scale(device):
    """The fp16 path: a forward under fp16 autocast whose scaled gradients overflow skips the optimizer
    step and halves the scale, and the next finite step updates the weights (CPU runs the same logic)."""
    model = nn.Linear(4, 1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**16)
    before = [p.detach().clone() for p in model.parameters()]
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    with torch.autocast(device, dtype=dtype):
        out = model(torch.full((2, 4), 1e3, device=device))
    scaler.scale(out.float().sum() * 1e35).backward()  # finite loss, gradients overflow once scaled
    optimizer_step(model, opt, scaler, clip=1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == 2.0**15
    scaler.scale(model(torch.ones(2, 4, device=device)).sum()).backward()
    optimizer_step(model, opt, scaler, clip=1.0)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_buffer_snapshot_puts_back_bn_statistics_a_nan_batch_poisoned():
    bn = nn.BatchNorm2d(3).train()
    bn(torch.randn(4, 3, 8, 8))
    snap = BufferSnapshot(bn)
    snap.take()
    good = (bn.running_mean.clone(), bn.running_var.clone())
    bn(torch.full((4, 3, 8, 8), math.nan))
    assert not torch.isfinite(bn.running_mean).all()
    snap.restore()
    assert torch.equal(bn.running_mean, good[0]) and torch.equal(bn.running_var, good[1])
