"""Export a trained model for deployment: ONNX or TorchScript, band normalisation inside, JSON sidecar.

The exported graph takes the raw band values as float32 ``(batch, bands, H, W)`` (H and W multiples
of the encoder's stride, any batch) and returns logits ``(batch, classes, H, W)``; the per-band
normalisation of the training statistics is part of it. ``<output>.json`` beside it says what a
runtime must know to feed it scenes: the bands and files, statistics, nodata and validity rules,
classes (codes, names, colours), tile/overlap defaults and the norm layers. Both files are written
under temporary names and renamed, and the export is checked against PyTorch on a random chip
(logits within 1e-4, relative to the largest logit when that is above 1).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from geoseg.engine.checkpoint import load_checkpoint
from geoseg.errors import GeosegError, first_line
from geoseg.inference.loaded import LoadedModel, load_model
from geoseg.inference.norm_calibration import held_by_default
from geoseg.inference.tiling import check_tiling
from geoseg.io import WRITE_FIX, atomic_paths, json_safe, write_errors

log = logging.getLogger(__name__)

FORMAT = "geoseg-export"
VERSION = 1
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT, OUTPUT = "bands", "logits"
TOLERANCE = 1e-4  # max |logit difference| to PyTorch accepted by the export check, per unit of max |logit|


class ExportNet(nn.Module):
    """Normalisation and network of a :class:`~geoseg.models.build.SegmentationModel`, without the
    Python-side shape checks (the runtime checks shapes against the sidecar)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.normalize, self.net = model.normalize, model.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.normalize.mean) * self.normalize.scale)


def sidecar_path(model_path: str) -> str:
    return f"{model_path}.json"


def default_output(checkpoint: str, fmt: str) -> str:
    """``runs/x/best.pt`` -> ``runs/x/best.onnx`` (or ``best.torchscript.pt``)."""
    return os.path.splitext(checkpoint)[0] + FORMATS[fmt]


def sidecar(loaded: LoadedModel, saved: dict[str, Any], fmt: str, tile: int, overlap: int) -> dict[str, Any]:
    """What a runtime needs besides the graph: data layout, statistics, classes and defaults."""
    data = (saved.get("config") or {}).get("data") or {}
    meta = loaded.model.meta
    return json_safe({
        "format": FORMAT, "version": VERSION, "model_format": fmt, "checkpoint": os.path.abspath(loaded.path),
        "epoch": saved.get("epoch"), "step": saved.get("step"),
        "input": {"name": INPUT, "dtype": "float32", "layout": "NCHW", "bands": loaded.num_bands,
                  "multiple_of": loaded.model.size_divisor,
                  "values": "raw band values: the normalisation is inside the model"},
        "output": {"name": OUTPUT, "layout": "NCHW", "classes": len(loaded.classes.codes),
                   "values": "logits (softmax over dim 1 gives probabilities)"},
        "bands": loaded.bands, "files": data.get("files"), "grid": loaded.grid, "invalid": loaded.invalid,
        "nodata": loaded.nodata, "stats": asdict(loaded.stats),
        "classes": loaded.classes.as_list(), "tile": tile, "overlap": overlap,
        "model": {k: meta.get(k) for k in ("arch", "encoder", "encoder_depth", "in_channels", "classes")},
        "norm_summary": meta.get("norm_summary"),
    })  # fmt: skip


def export_model(checkpoint: str, fmt: str, output: str, tile: int = 512, overlap: int = 64,
                 opset: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the model of ``checkpoint`` as ``fmt`` to ``output`` and its sidecar; returns the check."""
    if fmt not in FORMATS:
        raise GeosegError(f"format={fmt!r} is not an export format; choose one of {', '.join(FORMATS)}")
    loaded = load_model(checkpoint, torch.device("cpu"))
    if loaded.dates is not None:
        raise GeosegError(
            f"checkpoint '{checkpoint}' is a model of a series of {loaded.dates} dates; geoseg export takes "
            "single-date models for now (predict series with the checkpoint itself)"
        )
    check_tiling(tile, overlap, loaded.model.size_divisor, -(-tile // 256) * 256, 256)  # panel: any valid
    saved = load_checkpoint(checkpoint)
    net = ExportNet(loaded.model).eval()
    chip = _example(loaded, tile)
    meta = sidecar(loaded, saved, fmt, tile, overlap)
    paths = atomic_paths(output, sidecar_path(output))
    with paths as (tmp, tmp_json), write_errors(output, "exported model", WRITE_FIX):
        if fmt == "onnx":
            _write_onnx(net, chip, tmp, opset, loaded.model.size_divisor)
            reference, got = _run_onnx(tmp, net, chip)
        else:
            reference, got = _write_torchscript(net, chip, tmp)
        diff, scale = float(np.abs(reference - got).max()), float(np.abs(reference).max())
        limit = TOLERANCE * max(1.0, scale)  # float32 rounding grows with the logits' magnitude
        if not diff <= limit:
            raise GeosegError(
                f"the exported {fmt} model differs from PyTorch by {diff:.2e} (> {limit:.1e}, for logits up "
                f"to {scale:.3g}) on a test chip; nothing was written. Please report this with the "
                "checkpoint's model options"
            )
        meta["check"] = {"chip": list(chip.shape), "max_abs_logit_difference": diff, "max_abs_logit": scale}
        with open(tmp_json, "w") as fh:
            fh.write(json.dumps(meta, indent=2) + "\n")
    per_tile = (": its GroupNorm/InstanceNorm layers normalise each tile by itself, so its class map depends "
                "on the tile size, which predicting with the checkpoint avoids (docs/tiling.md)"
                if held_by_default(loaded.model) else "")  # fmt: skip
    log.info("wrote %s and %s (%s; max |logit - PyTorch| %.1e on a %s chip)%s", output, sidecar_path(output),
             fmt, diff, "×".join(map(str, chip.shape)), per_tile)  # fmt: skip
    return meta


def _example(loaded: LoadedModel, tile: int) -> torch.Tensor:
    """A reproducible chip of plausible raw values: mean ± 2 std per band (two chips: batch > 1)."""
    stats = loaded.stats
    gen = torch.Generator().manual_seed(0)
    side = min(tile, 4 * loaded.model.size_divisor)
    noise = torch.randn(2, loaded.num_bands, side, side, generator=gen)
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (stats.mean, stats.std))
    return mean + 2 * std * noise.clamp(-1, 1)


def _write_onnx(net: nn.Module, chip: torch.Tensor, path: str, opset: int | None, stride: int) -> None:
    """Dynamo export with a dynamic batch and H, W any multiple of the encoder's ``stride``."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise GeosegError(
            "format=onnx needs the onnx extra (onnx, onnxscript, onnxruntime): pip install '.[onnx]' in the "
            "geoseg folder"
        ) from None
    dim = torch.export.Dim
    shapes = {"x": {0: dim("batch", min=1), 2: stride * dim("h_blocks", min=1),
                    3: stride * dim("w_blocks", min=1)}}  # fmt: skip
    with quiet_exporter():
        try:
            program = torch.onnx.export(net, (chip,), dynamo=True, dynamic_shapes=shapes,
                                        input_names=[INPUT], output_names=[OUTPUT], opset_version=opset,
                                        verbose=False)  # fmt: skip
        except Exception as err:  # the exporter's own errors are long; its first line names the operator
            raise GeosegError(f"ONNX export failed: {first_line(err)}; try format=torchscript") from None
        program.save(path)


class DropLibraryInfo(logging.Filter):
    """Pass geoseg's records and every warning or error; drop the exporter's progress lines (torch.onnx,
    onnxscript and onnx_ir log each optimisation pass at INFO: 'Removed 30 unused nodes', ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] == "geoseg"


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence what the ONNX exporter prints ('[torch.onnx] Obtain model graph...') and logs below WARNING
    while it runs; its warnings and errors still reach the log, and its exceptions propagate."""
    handlers = logging.getLogger().handlers
    quiet = DropLibraryInfo()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def _run_onnx(path: str, net: nn.Module, chip: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from geoseg.inference.onnx_model import ort_session

    session = ort_session(path, torch.device("cpu"))
    with torch.no_grad():
        reference = net(chip).numpy()
    return reference, session.run([OUTPUT], {INPUT: chip.numpy()})[0]


def _write_torchscript(net: nn.Module, chip: torch.Tensor, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Trace ``net`` to ``path``; PyTorch's and the reloaded file's logits on ``chip``."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still widely run
        torch.jit.save(torch.jit.trace(net, chip), path)
        return net(chip).numpy(), torch.jit.load(path)(chip).numpy()
