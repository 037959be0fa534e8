"""The ``geoseg`` command line: help, Hydra overrides, clear errors, configs found from any folder."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from geoseg.cli import COMMANDS, main, positional_args
from geoseg.config import config_dir


def test_help_lists_the_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2 and "unknown command 'trian'" in capsys.readouterr().err


def test_configs_compose_with_overrides():
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("stats", overrides=["data.chip_size=32", "data.bands=[1,4]"])
    assert cfg.data.chip_size == 32 and list(cfg.data.bands) == [1, 4]
    assert cfg.output == "data/demo/stats.json"


def test_configs_ship_inside_an_installed_package():
    import geoseg

    pkg = Path(geoseg.__file__).parent
    assert (config_dir() / "stats.yaml").exists()
    if "site-packages" in str(pkg) and not (pkg.parent.parent / "configs").exists():
        assert config_dir() == pkg / "configs"


def test_demo_data_then_stats_from_another_folder(tmp_path, geoseg):
    done = geoseg("demo-data", "size=128", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data/demo/manifest.csv").exists()
    run = geoseg("stats", "data.chip_size=32", "progress=false", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    stats = json.loads((tmp_path / "data/demo/stats.json").read_text())
    assert stats["bands"] == [1, 2, 3, 4, 5, 6] and len(stats["mean"]) == 6
    assert not (tmp_path / "outputs").exists()  # one-shot commands leave no run folder


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("aug=nope", "Could not override 'aug'"),
        ("data=nope", "Could not find 'data/nope'"),
        ("data.chip_sise=3", "Could not override 'data.chip_sise'"),
    ],
)
def test_bad_overrides_give_hydras_message_not_a_traceback(tmp_path, override, expected, geoseg):
    run = geoseg("stats", override, cwd=tmp_path)
    assert run.returncode != 0
    assert expected in run.stderr and "Traceback" not in run.stderr


def test_user_errors_are_one_line(tmp_path, geoseg):
    run = geoseg(
        "stats", f"data.root={tmp_path}/none", cwd=tmp_path
    )  # the demo is generated only at data.demo
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"geoseg: error: data.root '{tmp_path}/none' is not a folder; "
                                               "point data.root at your scenes."]  # fmt: skip


def test_report_takes_its_folder_as_a_bare_first_argument():
    assert positional_args("report", ["multirun/x", "title=T"]) == ["dir=multirun/x", "title=T"]
    assert positional_args("report", ["dir=multirun/x"]) == ["dir=multirun/x"]
    assert positional_args("report", ["--help"]) == ["--help"]
    assert positional_args("train", ["sweep=smoke"]) == ["sweep=smoke"]
