"""Run an exported ONNX model (``geoseg export format=onnx``) through onnxruntime in ``geoseg predict``.

:func:`load_exported` reads ``model.onnx`` and its ``model.onnx.json`` sidecar into the same
:class:`~geoseg.inference.loaded_model.LoadedModel` a checkpoint gives, so every input check (bands, CRS,
statistics, nodata) and every output is the same; only the forward pass runs in onnxruntime.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch

from geoseg.classes import ClassInfo
from geoseg.data.band_files import check_grid_rule, check_invalid_rule, parse_files
from geoseg.data.stats import BandStats
from geoseg.errors import GeosegError, first_line
from geoseg.inference.loaded_model import LoadedModel

log = logging.getLogger(__name__)

EXPORT_FORMAT = "geoseg-export"  # as geoseg.inference.export.FORMAT (not imported: it imports torch.onnx)


def is_exported(path: str) -> bool:
    return path.lower().endswith(".onnx")


def ort_session(path: str, device: torch.device) -> Any:
    """An onnxruntime session on ``device`` (CUDA when the onnxruntime-gpu build has it), or one line."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise GeosegError(
            f"checkpoint={path} is an ONNX model, which needs onnxruntime: pip install '.[onnx]' in the "
            "geoseg folder (or onnxruntime-gpu)"
        ) from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise GeosegError(
                f"device={device} but this onnxruntime has no CUDA provider; pip install onnxruntime-gpu, "
                "or predict with device=cpu"
            )
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        raise GeosegError(f"cannot load ONNX model '{path}' ({first_line(err)}); re-export it") from None


class OnnxSegmenter:
    """Looks like a :class:`~geoseg.models.build.SegmentationModel` to the prediction loop: raw bands
    (a torch tensor) in, logits (a float32 tensor on the input's device) out."""

    def __init__(self, session: Any, sidecar: dict[str, Any]) -> None:
        self.session = session
        self.meta = {**sidecar["model"], "norm_summary": sidecar.get("norm_summary")}
        self.in_channels = int(sidecar["input"]["bands"])
        self.size_divisor = int(sidecar["input"]["multiple_of"])
        self.input, self.output = sidecar["input"]["name"], sidecar["output"]["name"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        chips = np.ascontiguousarray(x.float().cpu().numpy())
        (logits,) = self.session.run([self.output], {self.input: chips})
        return torch.from_numpy(logits).to(x.device)

    def to(self, *args: Any, **kwargs: Any) -> OnnxSegmenter:
        return self  # the session owns its placement and memory layout

    def modules(self) -> list[Any]:
        return []  # no torch norm layers to inspect (channels_last=auto)


def read_sidecar(path: str) -> dict[str, Any]:
    """The JSON beside an exported model, checked for the fields prediction needs."""
    side = f"{path}.json"
    if not os.path.isfile(path):
        raise GeosegError(f"checkpoint '{path}' does not exist; check the path")
    if not os.path.isfile(side):
        raise GeosegError(
            f"ONNX model '{path}' has no sidecar '{side}' (bands, statistics, classes); export it with "
            "`geoseg export checkpoint=... format=onnx` or put the sidecar back beside it"
        )
    try:
        with open(side) as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as err:
        raise GeosegError(f"cannot read '{side}' ({first_line(err)}); export the model again") from None
    missing = [k for k in ("input", "output", "stats", "classes", "model") if k not in meta]
    if meta.get("format") != EXPORT_FORMAT or missing:
        raise GeosegError(
            f"'{side}' is not a geoseg export sidecar (format {meta.get('format')!r}, missing "
            f"{', '.join(missing) or 'nothing'}); export the model again with `geoseg export`"
        )
    return meta


def load_exported(path: str, device: torch.device) -> LoadedModel:
    """An exported ONNX model and its sidecar as a :class:`LoadedModel`."""
    meta = read_sidecar(path)
    session = ort_session(path, device)
    model = OnnxSegmenter(session, meta)
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or shape[1] != model.in_channels:
        raise GeosegError(
            f"ONNX model '{path}' takes input {shape} but its sidecar says {model.in_channels} bands; the "
            "two files do not belong together, export the model again"
        )
    files = parse_files(meta.get("files"))
    log.info("loaded %s (onnxruntime %s): %d bands, %d classes", path,
             session.get_providers()[0], model.in_channels, len(meta["classes"]))  # fmt: skip
    return LoadedModel(
        model=model, path=path, bands=meta.get("bands"), stats=BandStats(**meta["stats"]),  # type: ignore[arg-type]
        nodata=meta.get("nodata"), classes=ClassInfo.from_config(meta["classes"]), files=files,
        grid=check_grid_rule(meta.get("grid"), files), invalid=check_invalid_rule(meta.get("invalid", "any")),
        tile=meta.get("tile"), overlap=meta.get("overlap"),
    )  # fmt: skip
