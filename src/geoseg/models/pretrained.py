"""Where ``encoder.weights`` comes from: a hub name, a TorchGeo weight, a URL or a local file.

:func:`resolve_weights` turns the option into :class:`PretrainedWeights`: the tensors, the file they
came from (name, path, SHA-256, for the checkpoint and the run's summary), the bands the first
convolution was trained on, and the input scaling the weights expect. Downloads go through each
ecosystem's own mechanism and cache, so they are shared with every other tool on the machine:

- ``imagenet``, ``ssl``, ``swsl``, … (the names smp lists for the encoder): smp's Hugging Face repos,
  into the Hugging Face cache (``HF_HOME``; ``HF_HUB_OFFLINE=1`` never touches the network);
- a ``tu-`` (timm) encoder: ``imagenet`` (timm's default tag) or any tag timm lists for the model
  (``a1_in1k``, ``tv_in1k``, …), from timm's Hugging Face repos into the same cache;
- ``torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO`` (needs ``torchgeo``): TorchGeo's weight enum, its
  file into the torch hub cache (``TORCH_HOME``), with its band list and normalisation;
- an ``https://`` URL of a weights file: into the torch hub cache as ``torch.hub`` does;
- a local file: a state dict (torchvision, timm, TorchGeo or smp layout) or a geoseg checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from geoseg.errors import GeosegError, first_line
from geoseg.models.weights import WEIGHT_SUFFIXES, is_geoseg_checkpoint, read_weights

log = logging.getLogger(__name__)

IMAGENET_BANDS = ("red", "green", "blue")
NO_WEIGHTS = ("", "none", "null")


@dataclass
class PretrainedWeights:
    """Pretrained tensors and what is known about them."""

    name: str  # encoder.weights as given
    source: str  # "smp hub" | "timm hub" | "torchgeo" | "url" | "file" | "geoseg checkpoint"
    file: Path
    stored: Any  # the file's loaded content (a state dict or a checkpoint dict)
    bands: list[str] | None = None  # the bands the first conv was trained on, in its channel order
    mean: list[float] | None = None  # the input scaling the weights expect, per band in raw units:
    std: list[float] | None = None  # (x - mean) / std; None: standardise with the data statistics
    notes: list[str] = field(default_factory=list)

    @property
    def is_checkpoint(self) -> bool:
        return is_geoseg_checkpoint(self.stored)

    def record(self) -> dict[str, Any]:
        """What the checkpoint's meta and the run's summary keep of the weights."""
        return {
            "weights": self.name,
            "weights_source": self.source,
            "weights_file": str(self.file),
            "weights_sha256": sha256_of(self.file),
            "weights_bands": list(self.bands) if self.bands else None,
        }


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(option: object, encoder: str) -> PretrainedWeights | None:
    """The weights ``encoder.weights=option`` names for ``encoder``, downloaded into the cache if needed."""
    if option is None or str(option).strip().lower() in NO_WEIGHTS:
        return None
    text = str(option).strip()
    if text.startswith("torchgeo:"):
        return torchgeo_weights(text, encoder)
    if text.startswith(("https://", "http://")):
        return url_weights(text)
    path = Path(text).expanduser()
    if path.is_file():
        return file_weights(text, path)
    if "/" in text or os.sep in text or text.endswith(WEIGHT_SUFFIXES) or path.suffix:  # hub names: no dot
        raise GeosegError(f"encoder.weights: no such file {path}; give the path of a local weights file")
    if encoder.startswith("tu-"):
        return timm_hub_weights(text, encoder[3:])
    return smp_hub_weights(text, encoder)


def file_weights(name: str, path: Path) -> PretrainedWeights:
    """A local weights file; a geoseg checkpoint brings its band names and statistics."""
    stored = read_weights(path)
    if not is_geoseg_checkpoint(stored):
        return PretrainedWeights(name, "file", path, stored)
    meta = stored["meta"]
    bands = meta.get("band_names")
    normalize = {k[len("normalize.") :]: v for k, v in stored["model"].items() if k.startswith("normalize.")}
    mean = std = None
    if {"mean", "scale"} <= normalize.keys() and not meta.get("series"):
        mean = normalize["mean"].flatten().tolist()
        std = (1.0 / normalize["scale"].flatten()).tolist()
    return PretrainedWeights(name, "geoseg checkpoint", path, stored, bands, mean, std)


def smp_hub_weights(name: str, encoder: str) -> PretrainedWeights:
    """``imagenet``, ``ssl``, … from the repo smp's encoder registry names, through the HF cache."""
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    name = next((known for known in settings if known.lower() == name.lower()), name)  # ImageNet = imagenet
    if name not in settings:
        known = ", ".join(sorted(settings)) or "none"
        raise GeosegError(
            f"encoder.weights={name}: smp has no such weights for {encoder} (it has: {known}); or give "
            "a local file, a URL, or torchgeo:<Weights enum>"
        )
    entry = settings[name]
    if "repo_id" not in entry:  # smp < 0.5 listed download URLs
        return url_weights(entry["url"], name=name, source="smp hub", bands=IMAGENET_BANDS)
    repo, revision = entry["repo_id"], entry.get("revision")
    path = hf_file(name, repo, "model.safetensors", revision)
    config = config_of(name, repo, revision)
    bands = list(IMAGENET_BANDS)[:: -1 if str(config.get("input_space", "RGB")).upper() == "BGR" else 1]
    return PretrainedWeights(name, "smp hub", path, read_weights(path), bands)


def timm_hub_weights(name: str, model: str) -> PretrainedWeights:
    """A timm model's pretrained tag (``imagenet`` = timm's default tag) through timm's HF repos."""
    import timm

    base = model.partition(".")[0]
    wanted = f"{base}.{name}" if name not in ("imagenet", "timm", "true", "True") else model
    try:
        cfg = timm.models.get_pretrained_cfg(wanted)
    except (RuntimeError, ValueError):
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{base}.*")]
        raise GeosegError(
            f"encoder.weights={name}: timm has no pretrained weights {wanted!r} (tags for {base}: "
            f"{', '.join(tags[:8]) or 'none'}); use encoder.weights=imagenet or one of those tags"
        )
    bands = list(IMAGENET_BANDS) if int(getattr(cfg, "input_size", (3,))[0]) == 3 else None
    if not cfg.hf_hub_id:
        return url_weights(cfg.url, name=name, source="timm hub", bands=bands)
    repo, _, revision = cfg.hf_hub_id.partition("@")
    try:  # timm's repos hold model.safetensors, older ones pytorch_model.bin only
        path = hf_file(name, repo, "model.safetensors", revision or None, quiet=True)
    except GeosegError:
        try:
            path = hf_file(name, repo, "pytorch_model.bin", revision or None, quiet=True)
        except GeosegError:
            path = hf_file(name, repo, "model.safetensors", revision or None)  # the error names this one
    return PretrainedWeights(name, "timm hub", path, read_weights(path), bands)


def hf_file(name: str, repo: str, filename: str, revision: str | None, quiet: bool = False) -> Path:
    """``filename`` of a Hugging Face repo, from the cache or downloaded into it."""
    from huggingface_hub import constants, hf_hub_download

    try:  # the cache first: a cached file never waits on the network
        return Path(hf_hub_download(repo, filename=filename, revision=revision, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(hf_hub_download(repo, filename=filename, revision=revision))
    except Exception as err:  # offline, firewalled, a proxy's error page: all mean "not in the cache"
        if quiet:
            raise GeosegError(str(err)) from None
        folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        where = folder / "snapshots" / (revision or "<commit>") / filename
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise GeosegError(
            f"encoder.weights={name}: {filename} of the Hugging Face repo {repo} is not in the cache "
            f"and could not be downloaded{offline} ({type(err).__name__}: {first_sentence(err)}); run once "
            f"with a network, or fetch it elsewhere (hf download {repo}"
            f"{f' --revision {revision}' if revision else ''}) and put it at {where}"
        ) from None


def first_sentence(err: BaseException) -> str:
    """The first sentence of an exception's first line (huggingface_hub's messages run long)."""
    return first_line(err).split(". ")[0].rstrip(".")


def config_of(name: str, repo: str, revision: str | None) -> dict[str, Any]:
    """The repo's ``config.json`` (smp stores the input space, mean and std there); {} when absent."""
    import json

    try:
        return json.loads(hf_file(name, repo, "config.json", revision, quiet=True).read_text())
    except (GeosegError, ValueError, OSError):
        return {}


def hub_cache_path(url: str) -> Path:
    """Where ``torch.hub`` keeps the file of ``url`` (``$TORCH_HOME/hub/checkpoints/<name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def url_weights(
    url: str, name: str | None = None, source: str = "url", bands: Any = None
) -> PretrainedWeights:
    """A weights file at a URL, through the torch hub cache (downloaded once, to a temporary name)."""
    path = hub_cache_path(url)
    shown = url.split("?")[0]
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", shown, path)
        try:
            torch.hub.download_url_to_file(url, str(path), progress=True)  # writes <path>.partial, renames
        except Exception as err:
            raise GeosegError(
                f"encoder.weights={name or shown}: {path.name} is not in the torch hub cache and could not "
                f"be downloaded from {shown} ({type(err).__name__}: {first_line(err)}); download it "
                f"elsewhere and put it at {path}, or set encoder.weights=/path/to/{path.name}"
            ) from None
    return PretrainedWeights(name or shown, source, path, read_weights(path), list(bands) if bands else None)


def torchgeo_weights(text: str, encoder: str) -> PretrainedWeights:
    """``torchgeo:<Enum>.<MEMBER>``: TorchGeo's file, bands and normalisation."""
    spec = text[len("torchgeo:") :]
    try:
        from torchgeo.models import get_weight
    except ImportError:
        raise GeosegError(
            f"encoder.weights={text} needs torchgeo (pip install torchgeo), or download the weights file "
            "and give its path"
        ) from None
    try:
        weight = get_weight(spec)
    except Exception:
        raise GeosegError(
            f"encoder.weights={text}: TorchGeo has no weights {spec!r}; {torchgeo_hint(spec)}"
        ) from None
    meta = dict(weight.meta)
    model = str(meta.get("model", ""))
    if model and model.removeprefix("tu-") != encoder.removeprefix("tu-"):
        raise GeosegError(
            f"encoder.weights={text} are weights of {model}, but encoder.name={encoder}; set "
            f"encoder.name={model} (or encoder={model})"
        )
    pretrained = url_weights(weight.url, name=text, source="torchgeo", bands=meta.get("bands"))
    pretrained.mean, pretrained.std = torchgeo_scaling(weight.transforms, len(pretrained.bands or [1]))
    return pretrained


def torchgeo_hint(spec: str) -> str:
    """The members of the named enum (``ResNet18_Weights``), or what a name looks like."""
    import torchgeo.models

    enum = getattr(torchgeo.models, spec.partition(".")[0], None)
    members = list(getattr(enum, "__members__", {}))
    if members:
        return f"{spec.partition('.')[0]} has {', '.join(members)}"
    return "names look like torchgeo:ResNet50_Weights.SENTINEL2_ALL_MOCO (enum.member of torchgeo.models)"


def torchgeo_scaling(transforms: Any, bands: int) -> tuple[list[float] | None, list[float] | None]:
    """The mean/std of the Normalize step in a TorchGeo weight's transforms, one per band."""
    modules = transforms.modules() if hasattr(transforms, "modules") else []
    for module in modules:
        if type(module).__name__ != "Normalize":
            continue
        flags = getattr(module, "flags", {}) or {}
        mean = flags.get("mean", getattr(module, "mean", None))
        std = flags.get("std", getattr(module, "std", None))
        if mean is None or std is None:
            continue
        mean, std = torch.as_tensor(mean).flatten().tolist(), torch.as_tensor(std).flatten().tolist()
        widen = bands if len(mean) == 1 else 1
        return mean * widen, std * widen
    return None, None
