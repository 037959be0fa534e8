"""The device and the autocast precision a command runs with: ``trainer.device``/``trainer.amp`` for
training, ``device``/``amp`` for predict, chosen by the same rules in one place."""

from __future__ import annotations

import torch

from geoseg.errors import GeosegError

AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(amp: str, device: torch.device, option: str = "trainer.amp") -> torch.dtype | None:
    """``trainer.amp`` as an autocast dtype (None = fp32); ``auto`` is bf16 on a bf16 GPU, else fp32.

    fp16 needs CUDA: on CPU its GradScaler has nothing to guard and CPU kernels gain nothing, so it
    is an error that points to bf16 instead of a silent change of precision.
    """
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if amp not in AMP:
        raise GeosegError(f"{option}={amp!r} is not one of auto, bf16, fp16, fp32")
    if amp == "fp16" and device.type != "cuda":
        raise GeosegError(f"{option}=fp16 needs a CUDA device; on CPU use {option}=bf16 or fp32")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise GeosegError(f"this GPU has no bf16 support; use {option}=fp16 (with loss scaling) or fp32")
    return AMP[amp]


def pick_device(wanted: str, local_rank: int, option: str = "trainer.device") -> torch.device:
    """``auto`` (CUDA when present), ``cuda`` or ``cpu``; errors name the config ``option``."""
    if wanted not in ("auto", "cuda", "cpu"):
        raise GeosegError(f"{option}={wanted!r} is not one of auto, cuda, cpu")
    if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise GeosegError(f"{option}=cuda but no CUDA device is visible; use {option}=auto or cpu")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
