"""``geoseg export checkpoint=... format=onnx|torchscript``: a checkpoint as ONNX or TorchScript + JSON."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from geoseg.config import whole
from geoseg.engine.checkpoint import checkpoint_file
from geoseg.errors import GeosegError
from geoseg.inference.export import FORMATS, default_output, export_model, sidecar_path
from geoseg.output_policy import check_existing, claim_output

USAGE = "geoseg export checkpoint=RUN|RUN/best.pt [format=onnx|torchscript] [output=MODEL.onnx]"


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get("checkpoint"):
        raise GeosegError(f"missing checkpoint=; usage: {USAGE}")
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise GeosegError(f"format={fmt!r} is not an export format; choose one of {', '.join(FORMATS)}")
    checkpoint = checkpoint_file(str(cfg.checkpoint))  # a run folder: its best.pt (else last.pt)
    output = str(cfg.output) if cfg.get("output") else default_output(checkpoint, fmt)
    existing = check_existing(cfg.get("existing", "overwrite"))
    if not claim_output(output, "export", existing, [checkpoint]):
        return {"output": output, "skipped": True}
    claim_output(sidecar_path(output), "export_sidecar", "overwrite" if existing == "skip" else existing,
                 [checkpoint], "output (its .json sidecar)")  # fmt: skip
    opset = whole(cfg, "opset", 7, example=18) if cfg.get("opset") is not None else None
    return export_model(checkpoint, fmt, output, cfg.tile, cfg.overlap, opset)
