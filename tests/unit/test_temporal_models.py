"""Series models (models/temporal.py): early and attention fusion of T dates of C bands plus validity."""

from __future__ import annotations

import copy
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from conftest import compose_config
from geoseg.data.stats import BandStats
from geoseg.engine.checkpoint import load_checkpoint, save_model_checkpoint
from geoseg.errors import GeosegError
from geoseg.inference.loaded import rebuild_model
from geoseg.models import SeriesNormalize, TemporalNet, build_model, model_from_config, norm_counts
from geoseg.models.norms import norm_preset
from geoseg.models.temporal import TemporalAttention, date_validity, fuse, split_series

T, C, SIZE = 3, 2, 32
TINY = {"decoder_channels": [16, 8]}  # with encoder_depth=2: a 1/4-resolution ResNet-18 and a small U-Net
FUSIONS = ("early", "attention")


def series_model(fusion: str, norm: str = "batchnorm", dates: int = T, **kwargs) -> nn.Module:
    return build_model(
        "unet", "resnet18", C, 2, norm_preset(norm), encoder_depth=2, decoder=TINY,
        series={"dates": dates, "fusion": fusion}, **kwargs,
    )  # fmt: skip


def raw_series(batch: int = 2, dates: int = T, seed: int = 0) -> torch.Tensor:
    """uint16-like raw bands and all-valid validity, (batch, dates*(C+1), SIZE, SIZE) float."""
    gen = torch.Generator().manual_seed(seed)
    bands = torch.randint(0, 3000, (batch, dates, C, SIZE, SIZE), generator=gen).float()
    valid = torch.ones(batch, dates, 1, SIZE, SIZE)
    return torch.cat([bands, valid], dim=2).reshape(batch, dates * (C + 1), SIZE, SIZE)


def set_validity(x: torch.Tensor, sample: int, date: int, value: float, region=(slice(None),) * 2) -> None:
    split_series(x, T)[(sample, date, C, *region)] = value


def stats(bands: int = C) -> BandStats:
    return BandStats(
        bands=list(range(1, bands + 1)), mean=[1500.0] * bands, std=[800.0] * bands, min=[0.0] * bands,
        max=[3000.0] * bands, p2=[50.0] * bands, p98=[2950.0] * bands, count=100, scenes=["a.tif"],
    )  # fmt: skip


def test_series_normalize_standardises_masks_and_keeps_validity():
    x = raw_series(batch=1).to(torch.int32)
    assert SeriesNormalize([0.0] * C, [1.0] * C, T)(x).dtype == torch.float32  # any raw dtype
    set_validity(x, 0, 1, 0)
    split_series(x, T)[0, 2, C, :4] = 0  # part of date 2 is cloud
    x = x.float()
    split_series(x, T)[0, 0, C, :2] = 0.4  # augmentation blurred validity: > 0.5 is valid
    split_series(x, T)[0, 0, C, 2:4] = 0.6
    out = split_series(SeriesNormalize([1500.0, 1000.0], [800.0, 0.0], T)(x), T)
    raw = split_series(x, T).float()
    assert out.dtype == torch.float32 and out.shape == (1, T, C + 1, SIZE, SIZE)
    assert torch.allclose(out[0, 0, 0, 2:], (raw[0, 0, 0, 2:] - 1500) / 800)
    assert torch.allclose(out[0, 0, 1, 2:], raw[0, 0, 1, 2:] - 1000)  # std 0: scale 1, as BandNormalize
    assert not out[0, 1, :C].any() and not out[0, 2, :C, :4].any() and out[0, 2, :C, 4:].any()
    assert not out[0, 0, :C, :2].any() and not out[0, 0, C, :2].any() and out[0, 0, C, 2:].all()
    assert torch.equal(out[:, :, C] > 0.5, date_validity(x, T))
    assert set(out[:, :, C].unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize(("norm", "layers"), [("batchnorm", {"BatchNorm2d"}), ("groupnorm", {"GroupNorm"}),
                                               ("identity", set())])  # fmt: skip
def test_both_fusions_build_and_run_with_each_norm(fusion, norm, layers):
    model = series_model(fusion, norm, stats=stats())
    assert set(norm_counts(model)) == layers
    assert model.in_channels == T * (C + 1) and model.meta["bands_per_date"] == C
    assert model.meta["series"]["fusion"] == fusion and model.meta["series"]["dates"] == T
    first = model.net.encoder.conv1.in_channels
    assert first == (C if fusion == "attention" else T * (C + 1))
    assert isinstance(model.net, TemporalNet) == (fusion == "attention")
    x = raw_series()
    set_validity(x, 1, T - 1, 0)  # a padded date
    for train in (True, False):
        out = model.train(train)(x)
        assert out.shape == (2, 2, SIZE, SIZE) and torch.isfinite(out).all()
    with pytest.raises(
        GeosegError, match=r"^the model takes \(batch, 3 dates × \(2 bands \+ 1 validity\) = 9"
    ):
        model(x[:, :-1])


def bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "batches" in k}


def test_padded_dates_stay_out_of_batchnorm_statistics():
    """Attention fusion gathers the date-chips with a valid pixel into one batch for the shared encoder,
    so its BatchNorm running statistics are those of the present chips alone. (Early fusion cannot do
    that: a padded date is C+1 zero channels of a sample's input, and BatchNorm sees that sample.)"""
    model = series_model("attention")
    reference, dense = copy.deepcopy(model), copy.deepcopy(model)
    x = raw_series()
    set_validity(x, 1, T - 1, 0)  # sample 1: its last date is padding
    set_validity(x, 0, 1, 0)  # sample 0: its middle date is all cloud
    model.train()(x)
    chips = split_series(model.normalize(x), T)[:, :, :C]
    present = torch.stack([chips[0, 0], chips[0, 2], chips[1, 0], chips[1, 1]])
    reference.net.encoder.train()(present)
    dense.net.encoder.train()(chips.reshape(2 * T, C, SIZE, SIZE))  # what a dense encoder would see
    got, want = bn_buffers(model.net.encoder), bn_buffers(reference.net.encoder)
    assert got.keys() == want.keys() and len(got) > 0
    for key in got:
        assert torch.allclose(got[key].float(), want[key].float(), atol=1e-6), key
    assert not torch.allclose(got["bn1.running_mean"], bn_buffers(dense.net.encoder)["bn1.running_mean"])


@pytest.mark.parametrize("norm", ["batchnorm", "groupnorm"])
def test_values_under_invalid_pixels_and_dates_do_not_change_attention_logits(norm):
    model = series_model("attention", norm).eval()
    x = raw_series()
    set_validity(x, 0, 0, 0, (slice(0, 8), slice(None)))  # cloud over the top of date 0
    set_validity(x, 1, 1, 0)  # a whole invalid date
    for t in range(T):
        set_validity(x, 0, t, 0, (slice(24, 32), slice(24, 32)))  # no valid date in a corner
    changed = x.clone()
    bands = split_series(changed, T)
    bands[0, 0, :C, :8] += 1000
    bands[1, 1, :C] = torch.rand_like(bands[1, 1, :C]) * 5000
    bands[0, :, :C, 24:, 24:] = 7
    with torch.no_grad():
        out = model(x)
        assert torch.isfinite(out).all()
        assert torch.allclose(model(changed), out)
        # past SeriesNormalize too: the net's own masking ignores a whole invalid date's features
        normalized = model.normalize(x)
        garbage = normalized.clone()
        split_series(garbage, T)[1, 1, :C] = torch.randn(C, SIZE, SIZE) * 3
        assert torch.allclose(model.net(garbage), model.net(normalized), atol=1e-5)
        assert torch.allclose(model.net(normalized), out)


def test_attention_weights_sum_to_one_over_the_valid_dates_of_each_pixel():
    torch.manual_seed(0)
    valid = torch.rand(2, T, 4, 4) > 0.4
    valid[0, :, 0, 0] = False  # a pixel with no valid date
    valid[1, :, 1, 1] = torch.tensor([True, False, False])  # one valid date: all its weight
    weights = TemporalAttention(16, T, heads=4, key_dim=8)(torch.randn(2, T, 16, 4, 4) * 5, valid.float())
    assert weights.shape == (2, T, 4, 4, 4)
    assert not weights.masked_select(~valid[:, :, None].expand_as(weights)).any()
    sums = weights.sum(dim=1)
    assert torch.allclose(sums, valid.any(dim=1)[:, None].float().expand_as(sums), atol=1e-6)
    assert torch.allclose(weights[1, 0, :, 1, 1], torch.ones(4))
    features = torch.randn(2, T, 6, 4, 4)  # 6 channels, 4 heads: every channel by the heads' mean
    assert torch.allclose(fuse(features, weights), (features * weights.mean(2, keepdim=True)).sum(1))


STEP = 0.1  # how far the time-only signal moves per date


def time_only_batch(n: int, gen: torch.Generator, dates: int = 4, block: int = 8) -> tuple:
    """Blocks of 8×8 px, each of a random class with a random phase u: band 0 at date t is (u ± t·STEP)
    mod 1 (class 0 rises, class 1 falls), band 1 is noise, so every single date is uniform for both."""
    g = SIZE // block
    cls = torch.randint(0, 2, (n, g, g), generator=gen)
    phase = torch.rand(n, 1, g, g, generator=gen)
    t = torch.arange(dates).view(1, dates, 1, 1)
    value = (phase + (1 - 2 * cls[:, None].float()) * STEP * t) % 1.0
    value = value.repeat_interleave(block, -2).repeat_interleave(block, -1)
    value = value + 0.02 * torch.randn(value.shape, generator=gen)
    noise = torch.rand(n, dates, SIZE, SIZE, generator=gen)
    x = torch.stack([value, noise, torch.ones_like(value)], dim=2).reshape(n, dates * (C + 1), SIZE, SIZE)
    return x, cls.repeat_interleave(block, -2).repeat_interleave(block, -1)


def accuracy_after_training(fusion: str, steps: int, date: int | None = None) -> float:
    """Pixel accuracy on fresh chips after ``steps`` Adam steps (``date``: trained and tested on it alone)."""
    torch.manual_seed(0)
    model = series_model(fusion, dates=4 if date is None else 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def chips(n: int, gen: torch.Generator) -> tuple:
        x, y = time_only_batch(n, gen)
        return (x, y) if date is None else (x[:, date * (C + 1) : (date + 1) * (C + 1)], y)

    model.train()
    for _ in range(steps):
        x, y = chips(8, gen)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = chips(32, torch.Generator().manual_seed(99))
    with torch.no_grad():
        return (model.eval()(x).argmax(1) == y).float().mean().item()


@pytest.fixture
def one_thread():
    """One intra-op thread: these small convs run faster so on a small shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("fusion", "steps"), [("early", 150), ("attention", 250)])
def test_both_fusions_learn_a_class_that_only_time_shows(one_thread, fusion, steps):
    assert accuracy_after_training(fusion, steps) > 0.9


def test_a_single_date_does_not_show_the_time_only_class(one_thread):
    """The control of the test above: the same model trained on date 2 alone stays near chance."""
    assert accuracy_after_training("early", 150, date=2) < 0.7


@pytest.mark.parametrize("fusion", FUSIONS)
def test_a_series_checkpoint_rebuilds_with_the_same_logits(tmp_path, fusion):
    model = series_model(fusion, stats=stats())
    x = raw_series()
    set_validity(x, 1, T - 1, 0)
    model.train()(x)  # running statistics away from their initial values
    band_stats = stats()
    config = {
        "norm": {"_target_": "torch.nn.BatchNorm2d", "_partial_": True},
        "data": {"classes": [{"code": 0, "name": "rising"}, {"code": 1, "name": "falling"}]},
    }
    path = tmp_path / "series.pt"
    save_model_checkpoint(path, model, asdict(band_stats), config)
    rebuilt = rebuild_model(load_checkpoint(path), str(path))
    assert rebuilt.meta["series"] == model.meta["series"] and rebuilt.in_channels == T * (C + 1)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model.eval()(x))


@pytest.mark.parametrize(("fusion", "first"), [("early", T * (C + 1)), ("attention", C)])
def test_encoder_weights_load_into_either_fusion(tmp_path, fusion, first):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = series_model(fusion, weights=str(path))
    assert model.meta["first_conv"] == "repeat" and model.net.encoder.conv1.in_channels == first


def test_the_temporal_config_group_picks_the_fusion_only_for_series():
    cfg = compose_config(
        "model_info", "temporal=attention", "encoder.depth=2", "model.decoder_channels=[16,8]"
    )
    assert cfg.temporal.heads == 4
    assert isinstance(model_from_config(cfg, C, 2, None, dates=T).net, TemporalNet)
    single = model_from_config(cfg, C, 2, None)
    assert "series" not in single.meta and single.in_channels == C
    early = compose_config("train", "encoder.depth=2", "model.decoder_channels=[16,8]")
    assert model_from_config(early, C, 2, None, dates=T).meta["series"] == {"dates": T, "fusion": "early"}


def test_a_bad_fusion_is_one_line_naming_the_option():
    cfg = compose_config("model_info", "temporal.fusion=late")
    with pytest.raises(GeosegError) as err:
        model_from_config(cfg, C, 2, None, dates=T)
    assert str(err.value) == "temporal.fusion='late' is not one of early, attention"
    with pytest.raises(GeosegError, match=r"^temporal.heads=0 must be a whole number >= 1"):
        build_model("unet", "resnet18", C, 2, nn.BatchNorm2d, series={"dates": T, "fusion": "attention",
                                                                       "heads": 0})  # fmt: skip
