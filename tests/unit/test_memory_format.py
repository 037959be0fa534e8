"""``channels_last: auto`` picks NHWC for BatchNorm-like models and NCHW where the norm is slow in NHWC."""

from __future__ import annotations

import pytest
import torch
from test_norms import build, norm_from_config

from geoseg.errors import GeosegError
from geoseg.models.memory_format import channels_last_for, slow_nhwc_norms

AUTO = {
    "batchnorm": True, "syncbatchnorm": True, "frozenbatchnorm": True, "identity": True,
    "groupnorm": False, "instancenorm": False, "layernorm": False,
}  # fmt: skip


@pytest.mark.parametrize(("norm_name", "expected"), sorted(AUTO.items()))
def test_auto_layout_follows_the_norm(norm_name, expected):
    model = build("unet", norm_from_config(norm_name))
    assert channels_last_for("auto", model) is expected
    assert bool(slow_nhwc_norms(model)) is not expected
    assert channels_last_for(True, model) is True and channels_last_for(False, model) is False


def test_a_bad_channels_last_value_names_the_option():
    model = build("unet", norm_from_config("batchnorm"))
    with pytest.raises(GeosegError, match=r"^channels_last='yes' must be true, false or auto\.$"):
        channels_last_for("yes", model, "channels_last")


def test_auto_nhwc_gives_the_nchw_output_in_training_mode():
    """The layout ``auto`` picks for BatchNorm changes no result (batch statistics included)."""
    torch.manual_seed(0)
    model = build("unet", norm_from_config("batchnorm")).train()
    x = torch.randn(4, 4, 64, 64)
    reference = model(x)
    model.to(memory_format=torch.channels_last)
    fast = model(x.contiguous(memory_format=torch.channels_last))
    assert fast.is_contiguous(memory_format=torch.channels_last) or fast.is_contiguous()
    torch.testing.assert_close(fast, reference, atol=1e-4, rtol=1e-4)
