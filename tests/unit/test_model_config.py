"""The shipped model/encoder/norm config groups compose and build, and `geoseg model-info` reports them."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import compose_config, run_error
from geoseg.cli import main
from geoseg.config import config_dir
from geoseg.data.stats import BandStats
from geoseg.errors import GeosegError
from geoseg.models import build_model, model_from_config, norm_counts
from geoseg.models.norms import norm_preset

MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
ENCODERS = sorted(p.stem for p in (config_dir() / "encoder").glob("*.yaml"))
NORMS = sorted(p.stem for p in (config_dir() / "norm").glob("*.yaml"))


def composed(*overrides: str):
    return compose_config("model_info", *overrides)


def test_the_issue_config_groups_are_all_shipped():
    assert set(MODELS) == {"unet", "fpn", "deeplabv3plus", "unetplusplus"}
    assert {"resnet18", "resnet34", "resnet50"} <= set(ENCODERS)
    assert any(composed(f"encoder={e}").encoder.name.startswith("tu-") for e in ENCODERS)
    assert set(NORMS) == {
        "batchnorm", "syncbatchnorm", "groupnorm", "groupnorm_ws", "frn", "instancenorm", "layernorm",
        "frozenbatchnorm", "identity", "auto",
    }  # fmt: skip


@pytest.mark.parametrize(
    "overrides", [[f"model={m}"] for m in MODELS] + [[f"encoder={e}"] for e in ENCODERS if e != "resnet18"]
)
def test_each_model_and_encoder_config_builds_with_its_default_decoder(overrides):
    cfg = composed(*overrides, "norm=groupnorm")
    model = model_from_config(cfg, in_channels=5, classes=4, stats=None)
    assert model.meta["arch"] == cfg.model.arch and model.meta["encoder"] == cfg.encoder.name
    assert set(norm_counts(model)) == {"GroupNorm"}
    first = next(m for m in model.net.encoder.modules() if hasattr(m, "in_channels"))
    assert first.in_channels == 5


def test_model_info_reports_the_conversion_and_names_unknown_weights(
    tmp_path, capsys, monkeypatch, release_hydra_logging
):
    monkeypatch.chdir(tmp_path)  # in-process; the demo data and the run folder go here
    monkeypatch.setattr(sys, "argv", sys.argv)  # main() sets sys.argv as Hydra reads it
    main(["demo-data", "size=64"])
    main(["model-info", "model=fpn", "norm=groupnorm", "norm.num_groups=16"])
    out = capsys.readouterr().out
    assert "BatchNorm2d×20 + GroupNorm×7 -> GroupNorm×27" in out
    assert "6 bands" in out and "(2, 4, 64, 64) logits" in out
    assert run_error(capsys, "model-info", "encoder.weights=imagenett") == (
        "geoseg: error: encoder.weights=imagenett: smp has no such weights for resnet18 (it has: imagenet, "
        "ssl, swsl); or give a local file, a URL, or torchgeo:<Weights enum>"
    )
    assert run_error(
        capsys, "model-info", "norm=groupnorm", "norm.group_policy=strict", "norm.num_groups=24"
    ) == (
        "geoseg: error: norm layer 'encoder.bn1': norm.num_groups=24 does not divide 64 channels; "
        "pick a num_groups that does or set norm.group_policy=divisor"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "segformerr"}, r"model.arch='segformerr' is not an smp architecture; choose one of"),
        ({"encoder": "resnet19"}, r"encoder.name='resnet19' is not an smp encoder"),
        ({"encoder": "tu-resnet19x"}, r"timm has no model 'resnet19x'"),
        (
            {"decoder": {"decoder_channels": [16, 8]}},
            r"model.arch=unet with encoder.name=resnet18 and model options "
            r"\{'decoder_channels': \[16, 8\]\}: .*depth",
        ),
        (  # model.arch=deeplabv3plus on top of configs/model/unet.yaml keeps the U-Net's channel list
            {"arch": "deeplabv3plus", "decoder": {"decoder_channels": [256, 128, 64, 32, 16]}},
            r"^model.arch=deeplabv3plus .*; to change architecture use model=<name> \(configs/model/",
        ),
        ({"arch": "fpn", "decoder": {"decoder_segmentation_channels": 48}}, r"a multiple of 32"),
        ({"stats_bands": 3}, r"the band statistics cover 3 bands but the model has 4"),
        (
            {"first_conv": "foo"},
            r"^encoder.first_conv='foo' is not one of auto, names, repeat, mean, rgb_then_r",
        ),
    ],
)
def test_model_option_mistakes_are_one_line_errors(kwargs, message):
    n = kwargs.pop("stats_bands", None)
    stats = BandStats([*range(1, n + 1)], [0.0] * n, [1.0] * n, [], [], [], [], 1, []) if n else None
    args = {"arch": "unet", "encoder": "resnet18", "decoder": None, "first_conv": "repeat", **kwargs}
    norm = norm_preset("batchnorm")
    with pytest.raises(GeosegError, match=message):
        build_model(args["arch"], args["encoder"], 4, 3, norm, decoder=args["decoder"], stats=stats,
                    first_conv=args["first_conv"])  # fmt: skip


def test_chips_the_encoder_cannot_divide_are_a_clear_error():
    model = build_model("unet", "resnet18", 4, 3, norm_preset("batchnorm"))
    with pytest.raises(GeosegError, match=r"chips of 48×48 px .* multiples of 32 \(set data.chip_size"):
        model(torch.zeros(1, 4, 48, 48))
    with pytest.raises(GeosegError, match=r"takes \(batch, 4 bands, H, W\) but got \(1, 6, 64, 64\)"):
        model(torch.zeros(1, 6, 64, 64))
