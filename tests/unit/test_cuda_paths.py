"""CUDA-only paths: cuDNN BatchNorm in train and eval, channels_last, bf16/fp16 autocast in the real loop.

Skipped without a GPU (CI has none); run on a lent GPU with ``scripts/gpu_checks.sh``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import tiny_train_cfg
from geoseg.engine.checkpoint import load_checkpoint
from geoseg.engine.fit import fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cudnn_batchnorm_uses_batch_statistics_in_train_and_running_statistics_in_eval():
    torch.manual_seed(0)
    bn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)).cuda()
    x = torch.randn(8, 3, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = bn.train()(x)
    mean = out.float().mean(dim=(0, 2, 3))
    assert torch.allclose(mean, bn[1].bias.float(), atol=2e-2), "train mode normalises with the batch"
    assert bn[1].num_batches_tracked.item() == 1 and not torch.equal(
        bn[1].running_mean, torch.zeros(8).cuda()
    )
    bn.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        alone = bn(x[:1])
        together = bn(x)[:1]
    assert torch.equal(alone, together), "eval mode uses the running statistics: no batch dependence"


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_the_loop_trains_on_cuda_with_autocast_and_channels_last(demo_root, tmp_path, amp):
    cfg = tiny_train_cfg(demo_root, "trainer.device=cuda", f"trainer.amp={amp}", "trainer.channels_last=true",
                         "trainer.max_epochs=2", "data.pin_memory=true")  # fmt: skip
    summary = fit(cfg, str(tmp_path))
    assert summary["device"].startswith("cuda") and summary["amp"] == (
        "bfloat16" if amp == "bf16" else "float16"
    )
    assert summary["nonfinite_steps"] == 0 and math.isfinite(summary["val"]["loss"])
    saved = load_checkpoint(tmp_path / "last.pt")
    assert (saved["scaler"] is not None) == (amp == "fp16"), "fp16 keeps its GradScaler state for resume"
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_scene_prediction_on_cuda_matches_the_cpu(tmp_path, amp):
    """Pinned buffers, non-blocking copies and blending on the GPU give the CPU's probabilities:
    within 2e-3 in fp32 (cuDNN's convolution algorithms, TF32 off) and 5e-2 under bf16 autocast."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from conftest import save_tiny_checkpoint, write_tif
    from geoseg.inference.loaded import load_model
    from geoseg.inference.predict import PredictOptions, predict_scene, prepare

    rng = np.random.default_rng(0)
    image = write_tif(tmp_path / "s.tif", rng.integers(200, 3000, (3, 300, 270), dtype=np.uint16),
                      transform=from_origin(600_000, 4_000_000, 10, 10), nodata=0, tiled=True)  # fmt: skip
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt", image, norm="batchnorm")
    probs = {}
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    for device in ("cpu", "cuda"):
        loaded = load_model(str(ckpt), torch.device(device))
        opts = PredictOptions(tile=64, overlap=16, batch_size=4, progress=False, probabilities=True)
        out = tmp_path / device / "p.tif"
        (job,) = prepare(loaded, [str(image)], [str(out)], opts)
        predict_scene(loaded, job, opts, torch.device(device), amp if device == "cuda" else None)
        with rasterio.open(tmp_path / device / "p_probs.tif") as src:
            probs[device] = src.read().astype(np.float32) / 255
    torch.backends.cudnn.allow_tf32 = tf32
    worst = np.abs(probs["cpu"] - probs["cuda"]).max()
    assert worst <= (2e-3 + 1 / 255 if amp is None else 5e-2), worst  # uint8 rounding adds up to 1/255
