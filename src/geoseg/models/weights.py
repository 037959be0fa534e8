"""Pretrained encoder tensors loaded into an encoder, the first convolution adapted to the model's bands.

The tensors (see :mod:`geoseg.models.pretrained` for where they come from) may be a torchvision,
timm, TorchGeo or smp encoder state dict, a whole smp model, or a Lightning-style
``{"state_dict": ...}``; key prefixes are matched automatically.

The first convolution's weight ``w`` (out, P, k, k), trained on P bands, becomes (out, N, k, k) for the
model's N bands by ``first_conv``:

- ``names`` (what ``auto`` picks when the weights and the data both name their bands and at least one
  name matches, see :mod:`geoseg.models.band_names`): a band found among the pretrained bands gets its
  filter unchanged, in the data's order; any other band gets the mean of the P pretrained filters
  times P/N (so a model none of whose bands match answers a uniform input as the pretrained conv
  does); pretrained bands the data lacks are dropped, and the mapping is logged in one line;

- ``repeat`` (smp's rule): band i gets ``w[:, i % 3] * 3 / N``; a single band gets ``w.sum(1)``;
- ``mean``: every band gets ``w.mean(1) * 3 / N`` (a uniform input gives the same response);
- ``rgb_then_random``: the bands listed in ``rgb_channels`` (default 0, 1, 2) get the R, G and B
  filters unchanged; the other bands keep the model's own random initialisation.

``auto`` uses ``repeat`` when names cannot be matched.
"""

from __future__ import annotations

import logging
import pickle
from collections import Counter, defaultdict
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import GeosegError, first_line, unpickling_detail
from geoseg.models.band_names import match_bands

log = logging.getLogger(__name__)

FIRST_CONV_STRATEGIES = ("auto", "names", "repeat", "mean", "rgb_then_random")
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
    matched: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: object
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


def first_conv_key(target: dict[str, torch.Tensor], in_channels: int) -> str | None:
    """The first 4-D weight that takes ``in_channels`` inputs: the stem convolution."""
    return next((k for k, v in target.items() if v.ndim == 4 and v.shape[1] == in_channels), None)


def map_first_conv_by_name(
    weight: torch.Tensor, pretrained: list[str], user: list[str | None]
) -> tuple[torch.Tensor, str]:
    """The first conv for the ``user`` bands from one trained on ``pretrained`` bands, and the mapping."""
    if weight.shape[1] != len(pretrained):
        raise GeosegError(
            f"the weights' bands (encoder.weights_bands, or the weights' own list) name {len(pretrained)} "
            f"bands but their first conv takes {weight.shape[1]} inputs"
        )
    index = match_bands(pretrained, user)
    fill = weight.mean(1) * (weight.shape[1] / len(user))
    out = torch.stack([weight[:, i] if i is not None else fill for i in index], dim=1)
    shown = [
        f"{u}<-{pretrained[i]}" if i is not None else f"{u}<-mean" for u, i in zip(user, index, strict=True)
    ]
    dropped = [b for i, b in enumerate(pretrained) if i not in index]
    words = ", ".join(shown) + (f"; pretrained bands not used: {', '.join(dropped)}" if dropped else "")
    return out, words


def pick_strategy(strategy: str, pretrained: list[str] | None, user: list[str | None] | None) -> str:
    """``auto`` -> ``names`` when some band names match, else ``repeat``; ``names`` needs names."""
    matched = bool(pretrained and user and any(i is not None for i in match_bands(pretrained, user)))
    if strategy == "names" and not matched:
        why = "the weights list no bands" if not pretrained else "no band name of the data matches theirs"
        raise GeosegError(
            f"encoder.first_conv=names: {why} ({', '.join(map(str, pretrained or [])) or '-'} vs "
            f"{', '.join(map(str, user or [])) or 'unnamed bands'}); name the bands (data.bands or band "
            "descriptions) or use encoder.first_conv=repeat"
        )
    if strategy == "auto":
        if pretrained and not matched:
            shown = ", ".join(pretrained)
            log.info("first conv: no band of the data is among the weights' (%s): repeat", shown)
        return "names" if matched else "repeat"
    return strategy


def load_encoder_weights(
    encoder: nn.Module,
    label: str,
    source: dict[str, torch.Tensor],
    strategy: str = "auto",
    rgb_channels: list[int] | None = None,
    pretrained_bands: list[str] | None = None,
    user_bands: list[str | None] | None = None,
    in_channels: int | None = None,
) -> dict:
    """Load ``source`` tensors into ``encoder``, adapting the first conv; returns what was done.

    ``label`` names the weights in errors; ``in_channels`` is the model's input count (to find the
    first conv when its shape already fits, where band names may still reorder it).
    """
    if strategy not in FIRST_CONV_STRATEGIES:
        raise GeosegError(f"encoder.first_conv={strategy!r} is not one of {', '.join(FIRST_CONV_STRATEGIES)}")
    target = encoder.state_dict()
    wanted = {k: v for k, v in target.items() if not k.endswith(SKIPPED_KEYS)}
    matched, unused = match_keys(source, wanted)
    missing = [k for k in wanted if k not in matched]
    if missing:
        raise GeosegError(
            f"encoder.weights={label} matches {len(matched)} of the encoder's {len(wanted)} tensors "
            f"(missing e.g. {', '.join(missing[:3])}); is it a state dict of this encoder?"
        )
    first = split_first_conv(matched, target, label)  # other shapes: another encoder, said first
    if unused:
        raise GeosegError(
            f"encoder.weights={label} has {len(unused)} tensors this encoder does not (e.g. "
            f"{', '.join(unused[:3])}); it is probably a bigger model of the same family: use the weights "
            "of this encoder (encoder=...) or the encoder those weights belong to."
        )
    used, mapping = "none", None
    strategy = pick_strategy(strategy, pretrained_bands, user_bands)
    if strategy == "names":
        first = first or first_conv_key(target, in_channels or len(user_bands or []))
        pretrained, user = list(pretrained_bands or []), list(user_bands or [])
        matched[first], mapping = map_first_conv_by_name(matched[first], pretrained, user)
        used = "names"
        log.info("first conv by band name: %s", mapping)
    elif first is not None:
        matched[first] = adapt_first_conv(matched[first], target[first], strategy, rgb_channels)
        used = strategy
    encoder.load_state_dict(matched, strict=False)
    log.info("loaded %d encoder tensors from %s (first conv: %s)", len(matched), label, used)
    rgb = (rgb_channels or [0, 1, 2]) if used == "rgb_then_random" else None
    return {"first_conv": used, "first_conv_key": first, "rgb_channels": rgb, "band_mapping": mapping}


def load_checkpoint_weights(
    model: nn.Module,
    checkpoint: dict,
    label: str,
    strategy: str = "auto",
    user_bands: list[str | None] | None = None,
) -> dict:
    """Start ``model`` from a geoseg checkpoint's weights (all but the band normalisation).

    Tensors whose name and shape match are loaded; the stem convolution of a model trained on other
    bands is mapped by band name (``first_conv`` auto/names); the rest (a head for another class
    count, norm layers of another type) keep their fresh initialisation and are reported.
    """
    meta = checkpoint["meta"]
    own = model.state_dict()
    state = checkpoint["model"]
    loaded = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and not k.startswith("normalize.")
    }
    theirs, ours = int(meta.get("in_channels", -1)), int(model.meta["in_channels"])
    pretrained_bands = meta.get("band_names")
    used, mapping, first = "none", None, None
    names_possible = not meta.get("series") and not model.meta.get("series")
    chosen = pick_strategy(strategy, pretrained_bands, user_bands) if names_possible else strategy
    if chosen == "names":
        first = first_conv_key({k: v for k, v in state.items() if not k.startswith("normalize.")}, theirs)
        pretrained, user = list(pretrained_bands or []), list(user_bands or [])
        loaded[first], mapping = map_first_conv_by_name(state[first], pretrained, user)
        used = "names"
        log.info("first conv by band name: %s", mapping)
    elif theirs != ours:
        raise GeosegError(
            f"encoder.weights={label} was trained on {theirs} input channels but this model has {ours}, "
            "and their bands cannot be matched by name; select the same bands (data.bands) to start from it"
        )
    model.load_state_dict(loaded, strict=False)
    log.info("loaded %d tensors from the geoseg checkpoint %s",
             len(loaded), label)  # fmt: skip
    fresh = [
        k for k in own if k not in loaded and not k.startswith("normalize.") and not k.endswith(SKIPPED_KEYS)
    ]
    if meta.get("norm") != model.meta.get("norm"):
        dropped = [k for k in state if k.endswith(".running_mean") and k not in own]
        fate = f"; the running statistics of its {len(dropped)} BN layers are dropped" if dropped else ""
        log.warning("%s was trained with %s, this model uses %s (γ/β kept where they fit%s)", label,
                    meta.get("norm"), model.meta.get("norm"), fate)  # fmt: skip
    if fresh:
        log.warning("%d tensors not in %s start fresh, e.g. %s", len(fresh), label, ", ".join(fresh[:3]))
    return {
        "first_conv": used, "first_conv_key": first, "band_mapping": mapping, "loaded": len(loaded),
        "fresh": len(fresh),
    }  # fmt: skip
