"""Pretrained encoder weights from a local file, adapted to any number of input bands.

A file may hold a torchvision, timm or smp encoder state dict (``.pth``/``.pt``/``.bin`` or
``.safetensors``), a whole smp model, or a Lightning-style ``{"state_dict": ...}``; key prefixes are
matched automatically. Nothing is ever downloaded: a hub name such as ``imagenet`` is refused.

When the file's first convolution has 3 input channels and the model has N bands, ``first_conv``
says how its weight ``w`` (out, 3, k, k) becomes (out, N, k, k):

- ``repeat`` (smp's rule): band i gets ``w[:, i % 3] * 3 / N``; a single band gets ``w.sum(1)``;
- ``mean``: every band gets ``w.mean(1) * 3 / N`` (a uniform input gives the same response);
- ``rgb_then_random``: the bands listed in ``rgb_channels`` (default 0, 1, 2) get the R, G and B
  filters unchanged; the other bands keep the model's own random initialisation.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import GeosegError, first_line, unpickling_detail

log = logging.getLogger(__name__)

FIRST_CONV_STRATEGIES = ("repeat", "mean", "rgb_then_random")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
SKIPPED_KEYS = ("num_batches_tracked",)
HEAD_PREFIXES = (  # classifier heads of ImageNet models, which no segmentation encoder keeps
    "fc.",
    "classifier.",
    "head.",
    "heads.",
    "last_linear.",
    "conv_head.",
    "bn2.",
    "global_pool.",
)


def check_weights_option(weights: str | None) -> Path | None:
    """The local weights file, or a one-line error for a hub name or a missing file."""
    if weights is None or str(weights).lower() in ("", "none", "null"):
        return None
    path = Path(str(weights)).expanduser()
    if path.is_file():
        return path
    if "/" not in str(weights) and not str(weights).endswith(WEIGHT_SUFFIXES):
        raise GeosegError(
            f"encoder.weights={weights} would download weights, and geoseg loads them only from a local "
            "file: download them once and set encoder.weights=/path/to/weights.pth (a torchvision, timm "
            "or smp state dict) or encoder.weights=null to train from scratch"
        )
    raise GeosegError(f"encoder.weights: no such file {path}; give the path of a local weights file")


def read_weights(path: Path) -> dict:
    """The object stored in a weights file (a state dict or a checkpoint dict), loaded on the CPU."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = unpickling_detail(err)
        if "GLOBAL" in detail:
            raise GeosegError(
                f"encoder.weights={path} holds pickled objects or code, which geoseg never loads "
                f"(torch.load(weights_only=True) refused it: {detail}); save a plain state dict of tensors"
            ) from None
        raise GeosegError(
            f"cannot read weights file {path}: it is not a torch state dict ({detail}); is it complete?"
        ) from None
    except Exception as err:  # torch and safetensors raise many kinds on a bad file
        raise GeosegError(
            f"cannot read weights file {path}: {type(err).__name__}: {first_line(err)}; is it complete?"
        ) from None


def is_geoseg_checkpoint(obj: object) -> bool:
    """Whether ``obj`` is a geoseg checkpoint: ``{"model": state_dict, "meta": {...}, ...}``."""
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and isinstance(obj.get("meta"), dict)


def tensors_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The flat name -> tensor mapping inside a loaded weights file."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise GeosegError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def common_tail(a: list[str], b: list[str]) -> int:
    """How many trailing dotted components two split keys share."""
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def prefix_of(parts: list[str], tail: int) -> str:
    """The dotted prefix left when the last ``tail`` parts are removed (``""`` or ending in a dot)."""
    return "".join(p + "." for p in parts[: len(parts) - tail])


def prefix_swaps(source: list[str], target: list[str], top: int = 8) -> list[tuple[str, str]]:
    """Candidate (strip, add) prefix pairs, most voted first, from keys that share their last parts."""
    by_tail: dict[str, list[list[str]]] = defaultdict(list)
    for key in target:
        parts = key.split(".")
        by_tail[".".join(parts[-2:])].append(parts)
    votes: Counter[tuple[str, str]] = Counter()
    for key in source:
        parts = key.split(".")
        for other in by_tail.get(".".join(parts[-2:]), ()):
            n = common_tail(parts, other)
            votes[(prefix_of(parts, n), prefix_of(other, n))] += 1
    return [pair for pair, _ in votes.most_common(top)] or [("", "")]


def match_keys(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename ``source`` keys to ``target``'s by the prefix swap that matches the most names and shapes.

    Handles ``module.`` (DDP), ``encoder.`` (a whole smp model), ``model.`` (smp's timm wrapper) and
    any other prefix on either side. Returns the matched tensors and the source keys under the same
    prefix that matched nothing (a classifier head and BatchNorm counters aside): tensors of a
    bigger model of the same family, which would otherwise be dropped without a word.
    """
    best: dict[str, torch.Tensor] = {}
    best_score, unused = (0, 0), []
    for strip, add in prefix_swaps(list(source), list(target)):
        mapped = {add + k[len(strip) :]: (k, v) for k, v in source.items() if k.startswith(strip)}
        hits = {k: v for k, (_, v) in mapped.items() if k in target}
        score = (sum(v.shape == target[k].shape for k, v in hits.items()), len(hits))
        if score > best_score:
            best, best_score = hits, score
            unused = [
                src for k, (src, _) in mapped.items()
                if k not in target and not src.endswith(SKIPPED_KEYS)
                and not src[len(strip) :].startswith(HEAD_PREFIXES)
            ]  # fmt: skip
    return best, unused


def adapt_first_conv(
    weight: torch.Tensor, current: torch.Tensor, strategy: str, rgb_channels: list[int] | None = None
) -> torch.Tensor:
    """The pretrained first-conv ``weight`` mapped onto ``current``'s number of input bands."""
    src, bands = weight.shape[1], current.shape[1]
    if strategy == "repeat":
        if bands == 1:
            return weight.sum(1, keepdim=True)
        index = torch.arange(bands) % src
        return weight[:, index] * (src / bands)
    if strategy == "mean":
        return weight.mean(1, keepdim=True).expand(-1, bands, -1, -1) * (src / bands)
    if strategy == "rgb_then_random":
        rgb = list(range(3)) if rgb_channels is None else [int(c) for c in rgb_channels]
        if src != 3 or len(rgb) != 3 or len(set(rgb)) != 3 or not all(0 <= c < bands for c in rgb):
            raise GeosegError(
                f"encoder.first_conv=rgb_then_random needs a 3-channel pretrained conv and "
                f"encoder.rgb_channels as 3 distinct band positions in 0..{bands - 1} (got {rgb}, "
                f"{src} pretrained channels)"
            )
        out = current.detach().clone()
        out[:, rgb] = weight
        return out
    raise GeosegError(f"encoder.first_conv={strategy!r} is not one of {', '.join(FIRST_CONV_STRATEGIES)}")


def split_first_conv(
    matched: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: Path
) -> str | None:
    """The one key whose input-channel count differs (the first conv); any other mismatch is an error."""
    odd = [k for k, v in matched.items() if v.shape != target[k].shape]
    first = [
        k
        for k in odd
        if matched[k].ndim == 4
        and matched[k].shape[:1] + matched[k].shape[2:] == target[k].shape[:1] + target[k].shape[2:]
    ]
    wrong = [k for k in odd if k not in first] + first[1:]
    if wrong:
        shown = ", ".join(f"{k} {tuple(matched[k].shape)} vs {tuple(target[k].shape)}" for k in wrong[:3])
        raise GeosegError(
            f"encoder.weights={path} does not fit this encoder: shapes differ at {shown}; "
            "is it the same encoder?"
        )
    return first[0] if first else None


def load_encoder_weights(
    encoder: nn.Module,
    path: Path,
    strategy: str = "repeat",
    rgb_channels: list[int] | None = None,
    stored: object = None,
) -> dict:
    """Load a local state dict into ``encoder``, adapting the first conv; returns what was done.

    ``stored`` is the file's already-loaded content, when the caller has read it.
    """
    if strategy not in FIRST_CONV_STRATEGIES:
        raise GeosegError(f"encoder.first_conv={strategy!r} is not one of {', '.join(FIRST_CONV_STRATEGIES)}")
    target = encoder.state_dict()
    wanted = {k: v for k, v in target.items() if not k.endswith(SKIPPED_KEYS)}
    source = tensors_of(read_weights(path) if stored is None else stored, path)
    matched, unused = match_keys(source, wanted)
    missing = [k for k in wanted if k not in matched]
    if missing:
        raise GeosegError(
            f"encoder.weights={path} matches {len(matched)} of the encoder's {len(wanted)} tensors "
            f"(missing e.g. {', '.join(missing[:3])}); is it a state dict of this encoder?"
        )
    first = split_first_conv(matched, target, path)  # other shapes: another encoder, said first
    if unused:
        raise GeosegError(
            f"encoder.weights={path} has {len(unused)} tensors this encoder does not (e.g. "
            f"{', '.join(unused[:3])}); it is probably a bigger model of the same family: use the weights "
            "of this encoder (encoder=...) or the encoder those weights belong to."
        )
    used = "none"
    if first is not None:
        matched[first] = adapt_first_conv(matched[first], target[first], strategy, rgb_channels)
        used = strategy
    encoder.load_state_dict(matched, strict=False)
    log.info("loaded %d encoder tensors from %s (first conv: %s)", len(matched), path, used)
    rgb = (rgb_channels or [0, 1, 2]) if used == "rgb_then_random" else None
    return {"weights": str(path), "first_conv": used, "first_conv_key": first, "rgb_channels": rgb}


def load_checkpoint_weights(model: nn.Module, checkpoint: dict, path: Path) -> dict:
    """Start ``model`` from a geoseg checkpoint's weights (all but the band normalisation).

    Tensors whose name and shape match are loaded; the rest (a head for another class count, norm
    layers of another type) keep their fresh initialisation and are reported.
    """
    meta = checkpoint["meta"]
    if int(meta.get("in_channels", -1)) != int(model.meta["in_channels"]):
        raise GeosegError(
            f"encoder.weights={path} was trained on {meta.get('in_channels')} bands but this model has "
            f"{model.meta['in_channels']}; select the same bands (data.bands) to start from it"
        )
    own = model.state_dict()
    state = checkpoint["model"]
    loaded = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and not k.startswith("normalize.")
    }
    model.load_state_dict(loaded, strict=False)
    log.info("loaded %d tensors from the geoseg checkpoint %s (its band statistics are not used)",
             len(loaded), path)  # fmt: skip
    fresh = [
        k for k in own if k not in loaded and not k.startswith("normalize.") and not k.endswith(SKIPPED_KEYS)
    ]
    if meta.get("norm") != model.meta.get("norm"):
        log.warning(
            "%s was trained with %s, this model uses %s", path, meta.get("norm"), model.meta.get("norm")
        )
    if fresh:
        log.warning("%d tensors not in %s start fresh, e.g. %s", len(fresh), path, ", ".join(fresh[:3]))
    return {"weights": str(path), "first_conv": "none", "loaded": len(loaded), "fresh": len(fresh)}
