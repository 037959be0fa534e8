"""A new user's first hour: help text, --version, typos, the latest link, kept checkpoints, progress lines,
the log format and the documentation's Python snippets run as written."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from conftest import run_cli, tiny_run
from geoseg.command_help import parse_options
from geoseg.config import config_dir
from geoseg.engine.progress import EpochProgress, RunClock, duration
from geoseg.engine.run_outputs import link_latest, next_steps, prune_checkpoints
from geoseg.log_format import ShortFormatter

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_command_help_lists_its_groups_and_every_option_with_its_yaml_comment(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0 and out.startswith("usage: geoseg train")
    assert re.search(r"^  norm=auto  \(choices: .*groupnorm_ws.*\)$", out, re.M)
    trainer_yaml = (config_dir() / "trainer" / "default.yaml").read_text()
    comment = re.search(r"^max_epochs: 5 +# (.*)$", trainer_yaml, re.M).group(1)
    assert re.search(rf"^  trainer.max_epochs: 5 +{re.escape(comment[:40])}", out, re.M)
    assert "data.chip_size: 64" in out and "hydra.job" not in out  # Hydra's own settings are not options
    _, out, _ = run_cli(capsys, "train", "norm=groupnorm", "--help")  # the chosen option's own keys
    assert "norm.channels_per_group: 16" in out and "norm.max_groups: 32" in out
    assert "trainer.max_epochs" not in run_cli(capsys, "predict", "--help")[1]  # that command's options only
    assert re.search(r"^  checkpoint: null +a geoseg checkpoint", run_cli(capsys, "predict", "-h")[1], re.M)


def test_a_data_config_that_inherits_another_lists_every_option_it_ends_up_with(capsys, compose_config):
    """data/sen1floods11.yaml states what differs from data/demo.yaml; its help shows both, as composed."""
    _, out, _ = run_cli(capsys, "train", "data=sen1floods11", "--help")
    section = out.split("data=sen1floods11 (data/sen1floods11.yaml):")[1].split("\n\n")[0]
    keys = re.findall(r"^  (data\.[\w.]+):", section, re.M)
    assert keys.count("data.chip_size") == 1 and "data.batch_size" in keys and "data.num_workers" in keys
    assert re.search(r"^  data\.chip_size: 128 +px, square chips", section, re.M)  # its value, demo's comment
    assert re.search(r"^  data\.label_nodata: -1 +the label uses -1", section, re.M)  # its own comment
    composed = compose_config("train", "data=sen1floods11").data
    assert set(composed) == {k.split(".")[1] for k in keys}  # every composed option is listed


def test_yaml_comments_parse_into_dotted_options_with_continuation_lines():
    text = (
        "defaults:\n  - data: demo\n"
        "a: 1          # first line\n"
        "              # and its continuation\n"
        "# a section comment\n"
        "b:\n  c: x    # nested\n  d: [1, 2]\n"
        "e: '#not a comment'\n"
    )
    options = {o.key: (o.value, o.comment) for o in parse_options(text, prefix="g.")}
    assert options["g.a"] == ("1", "first line and its continuation")
    assert options["g.b.c"] == ("x", "nested") and options["g.b.d"] == ("[1, 2]", "")
    assert "g.defaults" not in options and "g.b" in options


def test_version_typo_and_shell_completion_get_one_useful_line(capsys):
    code, out, _ = run_cli(capsys, "--version")
    import torch

    from geoseg import __version__

    assert code == 0 and out.startswith(f"geoseg {__version__} (torch {torch.__version__}")
    code, _, err = run_cli(capsys, "trian")
    assert code == 2 and err.strip() == (
        "geoseg: error: unknown command 'trian'; did you mean 'train'? (geoseg --help lists them)"
    )
    code, _, err = run_cli(capsys, "train", "-sc", "install=bash")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "geoseg train --help" in err


def test_latest_link_points_at_the_newest_run_and_is_replaced_atomically(tmp_path):
    first, second = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    first.mkdir(parents=True)
    second.mkdir()
    link = tmp_path / "outputs" / "train" / "latest"
    assert link_latest(str(first), str(link)) == str(link) and link.resolve() == first.resolve()
    assert not os.path.isabs(os.readlink(link))  # relative: the tree can be moved
    link_latest(str(second), str(link))
    assert link.resolve() == second.resolve()
    assert [p.name for p in link.parent.iterdir()] == ["latest"]  # no temporary link left behind
    assert link_latest(str(first), None) is None and link.resolve() == second.resolve()
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert link_latest(str(first), str(blocker)) is None and blocker.read_text() == "mine"


@pytest.mark.parametrize(
    ("keep", "left"),
    [("all", {"best.pt", "last.pt"}), ("best", {"best.pt"}), ("last", {"last.pt"}), ("none", set())],
)
def test_keep_checkpoints_deletes_what_it_does_not_keep(tmp_path, keep, left):
    for name in ("best.pt", "last.pt", "summary.json"):
        (tmp_path / name).write_text("x")
    prune_checkpoints(str(tmp_path), keep)
    assert {p.name for p in tmp_path.iterdir()} == left | {"summary.json"}
    assert ("predict checkpoint=" in next_steps(str(tmp_path), None, sorted(left))) == ("best.pt" in left)


@pytest.mark.usefixtures("release_hydra_logging")  # an in-process CLI run (conftest.py)
def test_a_finished_cli_run_links_latest_keeps_best_and_names_the_next_command(demo_root, tmp_path, capsys):
    link, run = tmp_path / "latest", tmp_path / "run"
    base = tiny_run(demo_root, "data.chips_per_epoch=8", "trainer.max_epochs=1",
                    "trainer.diagnostics.train_max_chips=0", f"trainer.latest_link={link}")  # fmt: skip
    code, _, _ = run_cli(capsys, "train", f"hydra.run.dir={run}", "trainer.keep_checkpoints=best", *base)
    assert code == 0 and link.resolve() == run.resolve()
    assert (run / "best.pt").exists() and not (run / "last.pt").exists() and (run / "summary.json").exists()
    assert f"next: geoseg predict checkpoint={link}/best.pt" in (run / "train.log").read_text()
    code, _, err = run_cli(capsys, "train", f"hydra.run.dir={tmp_path / 'bad'}", *base, "data.bands=[99]")
    assert code == 2 and "out of range" in err and link.resolve() == run.resolve()  # a failed start: unmoved
    bad_keep = "trainer.keep_checkpoints=some"
    code, _, err = run_cli(capsys, "train", f"hydra.run.dir={tmp_path / 'k'}", *base, bad_keep)
    assert code == 2 and err.strip() == (
        "geoseg: error: trainer.keep_checkpoints='some' is not one of all, best, last, none"
    )


def test_progress_lines_when_not_a_terminal_say_where_the_run_is(caplog):
    clock = RunClock(start_step=0, total_steps=10)
    with (
        caplog.at_level(logging.INFO, logger="geoseg.engine.progress"),
        EpochProgress(3, "epoch 1/2", clock, enabled=True, interval_s=1e-9) as bar,
    ):
        for i in range(3):
            bar.update(step=i + 1, loss=0.5, lr=1e-3)
            bar.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "epoch 1/2  batch 1/3 (33%)  step 1/10  loss 0.5000  run ETA 0s"
    assert lines[-1].startswith("epoch 1/2  batch 3/3 (100%)  step 3/10")
    caplog.clear()
    with EpochProgress(3, "epoch 1/2", clock, enabled=True, interval_s=0) as silent:
        for _ in range(3):
            silent.advance()
    assert silent.count == 3 and not caplog.records
    assert [duration(s) for s in (42, 125, 3725)] == ["42s", "2m 5s", "1h 2m"]


def test_the_log_prefix_is_the_time_and_only_warnings_name_their_level():
    fmt = ShortFormatter()
    info = logging.LogRecord("geoseg.engine.log", logging.INFO, __file__, 1, "epoch 1/5", None, None)
    warn = logging.LogRecord("geoseg.engine.log", logging.WARNING, __file__, 1, "careful", None, None)
    assert re.fullmatch(r"\d\d:\d\d:\d\d epoch 1/5", fmt.format(info))
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING: careful", fmt.format(warn))
    dated = ShortFormatter("%Y-%m-%d %H:%M:%S").format(info)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d epoch 1/5", dated)


def readme_python_blocks() -> list[str]:
    """The ```python blocks of the documentation (the chip pipeline's page, then the models'), in order."""
    pages = [DOCS / "python.md", DOCS / "models-and-norms.md"]
    return [block for page in pages for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]


def test_the_readme_python_snippets_run_as_written(tmp_path, monkeypatch):
    """The chip-pipeline snippet, then the model snippet on its batch (its weights file is the only
    change: a torchvision ResNet-34 state dict written here, as a user's download would be)."""
    import torch
    import torchvision

    blocks = readme_python_blocks()
    assert len(blocks) == 2, "the documentation's Python snippets changed: update this test"
    weights = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), weights)
    monkeypatch.chdir(tmp_path)  # the demo data and the statistics cache are written here
    namespace: dict = {}
    exec(compile(blocks[0], "docs/python.md", "exec"), namespace)
    assert namespace["x"].dtype == torch.float32 and namespace["y"].shape[-1] == 128
    model_code = blocks[1].replace("/weights/resnet34-b627a593.pth", str(weights))
    exec(compile(model_code, "docs/models-and-norms.md", "exec"), namespace)
    assert namespace["logits"].shape[1] == 4
