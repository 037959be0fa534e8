"""The sweep and launcher configs compose as documented, and submitit would get the right SLURM parameters."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import compose_config


def compose_train(*overrides: str):
    return compose_config("train", *overrides, hydra=True)


def test_norm_ablation_sweeps_norm_batch_and_seed_from_scratch_with_linear_lr():
    cfg = compose_train("sweep=norm_ablation")
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params == {
        "norm": "batchnorm,groupnorm,groupnorm_ws,frn,instancenorm,layernorm,identity",
        "data.batch_size": "2,4,8,16",
        "seed": "0,1,2",
    }
    one = compose_train("sweep=norm_ablation_batch1")
    assert OmegaConf.to_container(one.hydra.sweeper.params) == {
        "norm": "groupnorm,groupnorm_ws,frn,instancenorm,layernorm,identity", "data.batch_size": "1",
        "seed": "0,1,2",
    }  # fmt: skip
    assert one.optim.scale_lr == "linear" and one.encoder.weights is None
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.encoder.weights is None and cfg.optim.scale_lr == "linear" and cfg.optim.base_batch_size == 8
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
    assert subdir == "${hydra.job.override_dirname}/seed=${seed}"  # seed is a subfolder of its variant
    assert {"seed", "sweep", "launcher"} <= set(cfg.hydra.job.config.override_dirname.exclude_keys)


def test_smoke_and_sen1floods11_sweeps_extend_the_ablation():
    smoke = compose_train("sweep=smoke")
    assert smoke.hydra.sweeper.params["norm"] == "batchnorm,groupnorm"
    assert smoke.hydra.sweeper.params["data.batch_size"] == "2,4"
    assert smoke.optim.scale_lr == "linear" and smoke.trainer.max_epochs == 1
    real = compose_train("sweep=norm_ablation_sen1floods11")
    assert real.data.root.endswith("sen1floods11") and real.data.chip_size == 64
    assert real.data.chips_per_epoch * real.trainer.max_epochs == 2048


def test_default_launcher_is_hydras_basic_one():
    cfg = compose_train()
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")
    assert cfg.trainer.resume is None


class FakeExecutor:
    """Stands in for ``submitit.AutoExecutor``: records what the launcher configures and submits."""

    made: ClassVar[list[FakeExecutor]] = []

    def __init__(self, cluster: str, **kwargs) -> None:
        self.cluster, self.init, self.params, self.submitted = cluster, kwargs, {}, []
        FakeExecutor.made.append(self)

    def update_parameters(self, **params) -> None:
        self.params.update(params)

    def map_array(self, fn, *args):
        self.submitted = list(zip(*args, strict=True))

        class Done:
            def results(self):
                ret = JobReturn()
                ret.status, ret.return_value = JobStatus.COMPLETED, None
                return [ret]

        return [Done() for _ in self.submitted]


def test_slurm_launcher_hands_submitit_the_documented_parameters(tmp_path: Path, monkeypatch):
    submitit = pytest.importorskip("submitit", reason="hydra-submitit-launcher is the optional 'slurm' extra")
    cfg = compose_train(
        "launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.nodes=2", "hydra.launcher.timeout_min=600", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert cfg.trainer.resume == "auto"  # a requeued job continues from its last.pt
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    FakeExecutor.made.clear()
    results = launcher.launch([["norm=batchnorm", "seed=0"], ["norm=groupnorm", "seed=0"]], initial_job_idx=0)

    (ex,) = FakeExecutor.made
    assert ex.cluster == "slurm"
    assert ex.init == {"folder": f"{tmp_path / 'sweep'}/.submitit/%j", "slurm_max_num_timeout": 3}
    p = ex.params
    assert p["slurm_partition"] == "gpu" and p["nodes"] == 2
    assert p["gpus_per_node"] == 4 and p["tasks_per_node"] == 4  # one DDP rank per GPU
    assert p["timeout_min"] == 600 and p["slurm_signal_delay_s"] == 120 and p["cpus_per_task"] == 8
    assert p["slurm_array_parallelism"] == 16 and p["name"] == "train"
    assert [s[0] for s in ex.submitted] == [["norm=batchnorm", "seed=0"], ["norm=groupnorm", "seed=0"]]
    assert len(results) == 2 and (tmp_path / "sweep").is_dir()
