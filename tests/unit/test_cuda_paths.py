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
