"""BatchNorm behaviour: batch vs running statistics, freezing, and precise-BN recalibration."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.ops import FrozenBatchNorm2d

from geoseg.errors import GeosegError
from geoseg.models import build_model, convert_norm, recalibrate_bn
from geoseg.models.norms import GroupNorm, InstanceNorm2d, LayerNorm2d

TINY_UNET = {"decoder_channels": [32, 16, 16, 8, 8]}


def tiny_unet(norm) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model("unet", "resnet18", 4, 3, norm, decoder=TINY_UNET)


@pytest.mark.parametrize(
    "norm",
    [
        functools.partial(nn.BatchNorm2d),
        functools.partial(GroupNorm, num_groups=8),
        InstanceNorm2d,
        LayerNorm2d,
    ],
    ids=["batchnorm", "groupnorm", "instancenorm", "layernorm"],
)
def test_eval_output_of_a_chip_does_not_depend_on_its_batch(norm):
    model = tiny_unet(norm)
    model.train()
    for _ in range(3):  # move the running statistics away from their initial values
        model(torch.randn(4, 4, 64, 64) * 2 + 1)
    batch = torch.randn(4, 4, 64, 64)
    model.eval()
    with torch.no_grad():
        alone = model(batch[:1])
        together = model(batch)
    assert torch.allclose(alone, together[:1], atol=1e-5)


def test_train_mode_uses_batch_statistics():
    model = tiny_unet(functools.partial(nn.BatchNorm2d))
    batch = torch.randn(4, 4, 64, 64)
    model.train()
    with torch.no_grad():
        a = model(batch[:2])
        b = model(torch.cat([batch[:1], batch[2:4] * 5]))
    assert not torch.allclose(a[:1], b[:1], atol=1e-3)  # same chip, other batch mates: other output


def test_frozen_batchnorm_stays_fixed_through_training_steps(tmp_path):
    source = tiny_unet(functools.partial(nn.BatchNorm2d))
    source.train()
    source(torch.randn(4, 4, 64, 64) * 3)  # non-trivial running statistics to freeze
    net = source.net
    convert_norm(net, FrozenBatchNorm2d)
    frozen = [m for m in net.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and not any(p.requires_grad for m in frozen for p in m.parameters())

    def frozen_state() -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v.clone() for i, m in enumerate(frozen) for k, v in m.state_dict().items()}

    before = frozen_state()
    assert len(before) == 4 * len(frozen)  # weight, bias, running_mean, running_var
    assert any(not torch.all(v == 0) for k, v in before.items() if k.endswith("running_mean"))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    net.train()
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(2, 4, 64, 64)).square().mean().backward()
        opt.step()
    after = frozen_state()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    conv = net.encoder.conv1.weight
    assert conv.grad is not None  # the rest of the network did train


class ConvBN(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN: the first BN's input statistics are computable directly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1, self.bn1 = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.conv2, self.bn2 = nn.Conv2d(5, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def test_recalibrate_bn_sets_running_stats_to_the_dataset_statistics():
    torch.manual_seed(2)
    images = torch.randn(24, 3, 8, 8) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2
    loader = DataLoader(TensorDataset(images), batch_size=5)  # uneven last batch of 4
    model = ConvBN().eval()
    seen = recalibrate_bn(model, loader, num_batches=100)
    assert seen == 5
    with torch.no_grad():
        feats = model.conv1(images)  # the first BN's input over the whole dataset
    mean = feats.double().mean(dim=(0, 2, 3))
    var = feats.double().var(dim=(0, 2, 3), correction=1)
    assert torch.allclose(model.bn1.running_mean.double(), mean, atol=1e-5)
    assert torch.allclose(model.bn1.running_var.double(), var, rtol=1e-4)
    assert not model.training and not model.bn1.training  # modes restored


def test_recalibrate_bn_uses_only_the_requested_batches_and_mapping_batches():
    images = torch.randn(20, 3, 8, 8)
    batches = [{"image": images[i : i + 4]} for i in range(0, 20, 4)]
    model = ConvBN().train()
    assert recalibrate_bn(model, batches, num_batches=2) == 2
    with torch.no_grad():
        feats = model.conv1(images[:8])
    assert torch.allclose(model.bn1.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert model.training


def test_recalibrate_bn_errors_on_an_empty_loader_and_skips_models_without_bn():
    with pytest.raises(GeosegError, match="no batches"):
        recalibrate_bn(ConvBN(), [], num_batches=3)
    no_bn = nn.Sequential(nn.Conv2d(3, 3, 1), nn.GroupNorm(1, 3))
    assert recalibrate_bn(no_bn, [torch.zeros(1, 3, 4, 4)], 1) == 0


def _recalibrate_shard(rank: int, world: int, init_file: str, out: str) -> None:
    """One gloo rank: recalibrate on its half of the images; rank 0 saves the result."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        images = torch.load(out + ".images")
        shard = images[rank::world]
        model = ConvBN().eval()
        recalibrate_bn(model, [shard[i : i + 3] for i in range(0, len(shard), 3)], num_batches=10)
        if rank == 0:
            torch.save({"mean": model.bn1.running_mean, "var": model.bn1.running_var}, out)
    finally:
        dist.destroy_process_group()


def test_recalibrate_bn_merges_the_statistics_of_all_ranks(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(3)
    images = torch.randn(14, 3, 8, 8) * 2 + torch.arange(14.0).view(14, 1, 1, 1) / 4  # ranks differ
    out = str(tmp_path / "stats.pt")
    torch.save(images, out + ".images")
    mp.spawn(_recalibrate_shard, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    merged = torch.load(out)
    with torch.no_grad():
        feats = ConvBN().conv1(images).double()
    assert torch.allclose(merged["mean"].double(), feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(merged["var"].double(), feats.var(dim=(0, 2, 3)), rtol=1e-4)
