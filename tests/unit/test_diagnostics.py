"""End-of-run diagnostics: BatchNorm with batch vs running statistics, recalibration, the train-val gap."""

from __future__ import annotations

import json

import torch
from torch import nn

from conftest import tiny_train_cfg
from geoseg.data.samplers import GridChipSampler
from geoseg.engine.diagnostics import with_batch_statistics
from geoseg.engine.fit import fit


def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    net[1].running_mean.fill_(5.0)  # running statistics far from any batch's
    net[1].running_var.fill_(9.0)
    return net.eval()


def test_batch_statistics_copy_normalises_each_batch_and_leaves_the_model_alone():
    net, x = bn_net(), torch.randn(4, 3, 8, 8)
    variant = with_batch_statistics(net)
    variant.eval()
    reference = bn_net().train()  # train mode: batch statistics
    with torch.no_grad():
        expected = reference(x)
        assert torch.allclose(variant(x), expected, atol=1e-6)
        assert not torch.allclose(net(x), expected, atol=1e-3)  # running statistics give something else
    assert torch.all(net[1].running_mean == 5.0) and torch.all(net[1].running_var == 9.0)
    assert variant[1].running_mean is None and not net[1].training


def test_grid_sampler_keeps_an_evenly_spaced_subset():
    full = GridChipSampler([(0, 0, 64, 64), (0, 0, 64, 64)], 16)
    sub = GridChipSampler([(0, 0, 64, 64), (0, 0, 64, 64)], 16, max_chips=5)
    assert len(full) == 32 and len(sub) == 5
    chips = list(sub)
    assert chips[0] == full.chips[0] and chips[-1] == full.chips[-1]
    assert {c.scene for c in sub} == {0, 1}  # spread over both scenes
    assert len(GridChipSampler([(0, 0, 64, 64)], 16, max_chips=100)) == 16


def test_batchnorm_run_summary_has_statistics_variants_and_the_gap(demo_root, tmp_path):
    cfg = tiny_train_cfg(demo_root, "trainer.max_steps=2", "trainer.diagnostics.train_max_chips=6",
                         "trainer.diagnostics.bn_statistics=true", "trainer.precise_bn.num_batches=2",
                         "seed=3")  # fmt: skip
    summary = fit(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "summary.json").read_text())
    bn = saved["bn_eval"]
    assert bn["running_stats_miou"] == saved["val"]["miou"]
    assert 0.0 <= bn["batch_stats_miou"] <= 1.0 and 0.0 <= bn["recalibrated_miou"] <= 1.0
    assert bn["recalibration_batches"] == 2 and bn["val_batch_size"] == 4
    assert saved["train_eval"]["pixels"] <= 6 * 32 * 32
    assert saved["generalization_gap"] == saved["train_eval"]["miou"] - saved["val"]["miou"]
    assert saved["seed"] == 3 and saved["peak_lr"] == cfg.optim.optimizer.lr
    assert summary["bn_eval"] == bn


def test_groupnorm_run_has_no_batchnorm_block_and_diagnostics_can_be_off(demo_root, tmp_path):
    cfg = tiny_train_cfg(demo_root, "trainer.max_steps=1", "norm=groupnorm", "norm.num_groups=4",
                         "trainer.diagnostics.train_max_chips=0")  # fmt: skip
    saved = fit(cfg, str(tmp_path))
    assert "bn_eval" not in saved and "train_eval" not in saved and "generalization_gap" not in saved


def test_tiling_diagnostic_records_changes_seams_and_miou_plain_and_held(demo_root, tmp_path):
    cfg = tiny_train_cfg(
        demo_root, "trainer.max_steps=2", "trainer.diagnostics.tiling=true", "norm=groupnorm"
    )
    fit(cfg, str(tmp_path))
    tiling = json.loads((tmp_path / "summary.json").read_text())["tiling"]
    assert tiling["tiles"] == [32, 512] and tiling["norm_stats"] == "scene" and tiling["scenes"] >= 1
    for mode in ("plain", "default"):
        assert 0.0 <= tiling[mode]["change_pct"] <= 100.0
        assert 0.0 <= tiling[mode]["miou_chip"] <= 1.0 and 0.0 <= tiling[mode]["miou_large"] <= 1.0
    assert tiling["plain"] != tiling["default"]  # held statistics give other maps than each tile's own


def test_tiling_diagnostic_of_a_batchnorm_model_is_the_same_in_both_modes(demo_root, tmp_path):
    cfg = tiny_train_cfg(
        demo_root, "trainer.max_steps=2", "trainer.diagnostics.tiling=true", "norm=batchnorm"
    )
    fit(cfg, str(tmp_path))
    tiling = json.loads((tmp_path / "summary.json").read_text())["tiling"]
    assert tiling["norm_stats"] == "tile" and tiling["plain"] == tiling["default"]
