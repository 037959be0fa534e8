"""``encoder.weights=https://...``: downloaded once from a real server on 127.0.0.1 into the torch hub
cache (``TORCH_HOME``), then read from the cache without a request; a failed download is one line."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn

from geoseg.errors import GeosegError
from geoseg.models import build_model
from servers.range_http import RangeServer

TINY = {"decoder_channels": [32, 16, 16, 8, 8]}
BN = functools.partial(nn.BatchNorm2d)


def test_weights_url_downloads_once_into_the_torch_hub_cache(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, served / "resnet18-test.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-test.pth"
    with RangeServer(served) as srv:
        url = srv.url("resnet18-test.pth")
        model = build_model("unet", "resnet18", 3, 2, BN, decoder=TINY, weights=url)
        assert cached.is_file() and model.meta["weights_file"] == str(cached)
        assert model.meta["weights_source"] == "url" and model.meta["weights"] == url
        assert torch.equal(model.net.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
        downloads = len(srv.log("resnet18-test.pth"))
        build_model("unet", "resnet18", 3, 2, BN, decoder=TINY, weights=url)
        assert downloads >= 1 and len(srv.log("resnet18-test.pth")) == downloads  # the cache answered
        with pytest.raises(GeosegError) as err:
            build_model("unet", "resnet18", 3, 2, BN, decoder=TINY, weights=srv.url("missing.pth"))
    message = str(err.value)
    assert "\n" not in message and "missing.pth is not in the torch hub cache" in message
    assert "HTTPError: HTTP Error 404" in message
    assert not (cached.parent / "missing.pth").exists()
