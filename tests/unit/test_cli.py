"""The ``geoseg`` command line: help, Hydra overrides, clear errors, configs found from any folder."""

import json
import re
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from conftest import compose_config, drop_hydra_log_handlers, run_error
from geoseg.cli import COMMANDS, main, positional_args
from geoseg.config import config_dir, flag, is_real, is_whole
from geoseg.errors import GeosegError
from geoseg.overrides import check_overrides


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
    cfg = compose_config("stats", "data.chip_size=32", "data.bands=[1,4]")
    assert cfg.data.chip_size == 32 and list(cfg.data.bands) == [1, 4]
    assert cfg.output is None and cfg.data.cache_dir == "outputs/cache"  # stats-<key>.json there


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
    (written,) = (tmp_path / "outputs" / "cache").glob("stats-*.json")  # keyed by what they describe
    stats = json.loads(written.read_text())
    assert stats["bands"] == [1, 2, 3, 4, 5, 6] and len(stats["mean"]) == 6
    assert written.name == f"stats-{stats['key']}.json"
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["cache"]  # and no run folder


NORMS = (
    "(choose from auto, batchnorm, frn, frozenbatchnorm, groupnorm, groupnorm_ws, identity, instancenorm, "
    "layernorm, syncbatchnorm)"
)
GRAMMAR = "(see https://hydra.cc/docs/advanced/override_grammar/basic)"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("train", "trainer.max_epoch=3"),
            "unknown option 'trainer.max_epoch'; did you mean 'trainer.max_epochs'? "
            "(every option: geoseg train --help)",
        ),
        (
            ("stats", "data.chip_sise=3"),
            "unknown option 'data.chip_sise'; did you mean 'data.chip_size'? "
            "(every option: geoseg stats --help)",
        ),
        (
            ("train", "data.splits.tain.labels='{x}.tif'"),
            "unknown option 'data.splits.tain.labels'; did you mean 'data.splits.train.labels'? "
            "(every option: geoseg train --help)",
        ),
        (
            ("train", "norm=groupnorm", "norm.num_groupz=4"),
            "unknown option 'norm.num_groupz'; did you mean 'norm.num_groups'? "
            "(every option: geoseg train --help)",
        ),
        (
            ("train", "hydra.run.dirr=out"),
            "unknown option 'hydra.run.dirr'; did you mean 'hydra.run.dir'? "
            "(every option: geoseg train --cfg hydra)",
        ),
    ],
)
def test_a_key_typo_names_the_closest_key(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    """A misspelt key: the nearest key of the config the other overrides compose (one line, status 2)."""
    assert run_error(capsys, *args) == f"geoseg: error: {expected}"


def test_a_key_typo_with_no_close_key(capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing near ``banana`` under ``trainer``: no guess, only how to add it and where the keys are."""
    assert run_error(capsys, "train", "trainer.banana=3") == (
        "geoseg: error: unknown option 'trainer.banana' (add a new key with +trainer.banana=3; every option: "
        "geoseg train --help)"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "norm=groupnrom"), f"unknown norm 'groupnrom'; did you mean 'groupnorm'? {NORMS}"),
        (("train", "trainer.max_epoch=3", "norm=groupnrom"),  # Hydra finds the group typo first
         f"unknown norm 'groupnrom'; did you mean 'groupnorm'? {NORMS}"),
        (("model-info", "encoder=resnet19"), "unknown encoder 'resnet19'; did you mean 'resnet18'? "
         "(choose from efficientnet_b0, resnet18, resnet34, resnet50)"),
        (("stats", "data=nope"),
         "unknown data 'nope' (choose from demo, eolearn_slovenia, eolearn_slovenia_series, s2_series, "
         "s2_stac, sen1floods11, sen1floods11_s1s2, spacenet_vector)"),
        (("stats", "aug=flips"),
         "unknown option 'aug' (geoseg stats does not use config group aug; add it with +aug=flips)"),
    ],
)  # fmt: skip
def test_a_group_typo_lists_the_options(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    """An unknown option of a config group: the nearest one and all of them (a group not in the command's
    defaults list: how to add it)."""
    assert run_error(capsys, *args) == f"geoseg: error: {expected}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "data.bands=[1,4"),
         f"malformed override 'data.bands=[1,4': no viable alternative at input '[1,4' {GRAMMAR}"),
        (("train", "max_epochs"), f"malformed override 'max_epochs': missing EQUAL at '<EOF>' {GRAMMAR}"),
        (("stats", "=3"), f"malformed override '=3': no key before '=' {GRAMMAR}"),
        (("predict", "input=/d/x_{file}.tif"),
         "malformed override 'input=/d/x_{file}.tif': mismatched input '{' expecting <EOF>; quote a value "
         f"with braces such as {{file}}: 'input=\"/d/x_{{file}}.tif\"' {GRAMMAR}"),
        (("report", "multirun/x", "stray"),  # the bare first argument is report's dir=
         f"malformed override 'stray': missing EQUAL at '<EOF>' {GRAMMAR}"),
    ],
)  # fmt: skip
def test_a_malformed_override_is_named(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    """A grammar error: the override it is in and Hydra's reason."""
    assert run_error(capsys, *args) == f"geoseg: error: {expected}"


def test_other_composition_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Hydra's other multi-line composition errors are joined into one line."""
    assert run_error(capsys, "train", "+seed=3") == (
        "geoseg: error: Could not append to config. An item is already at 'seed'; Either remove + prefix: "
        "'seed=3'; Or add a second + to add or override 'seed': '++seed=3'"
    )


TRICKY = [
    "data.bands=[1,4]", "data.label_nodata=null", "data.splits.train.labels='train/labels/{stem}.tif'",
    "+note='a, b'", "~data.max_open_files", "++seed=3", "data.chip_size=${data.batch_size}",
    "hydra.job.chdir=false",
]  # fmt: skip


@pytest.mark.parametrize("config_name", ["train", "stats", "model_info"])
def test_valid_tricky_overrides_pass_the_check(config_name: str, tmp_path: Path) -> None:
    """Lists, null, quoted braces and commas, +new, ~deleted, ++forced, interpolated and hydra.* overrides."""
    check_overrides(config_name, config_name, [*TRICKY, f"hydra.run.dir={tmp_path}/run"])
    assert not GlobalHydra.instance().is_initialized()


LEFT_TO_HYDRA = [
    (["-m", "trainer.max_epoch=3"], "trainer.max_epoch=3"),
    (["--cfg", "job", "norm=groupnrom"], "norm=groupnrom"),
    (["norm=batchnorm,groupnrom"], "norm=groupnrom"),
    (["seed=range(2)", "trainer.max_epoch=1"], "trainer.max_epoch=1"),
]


@pytest.mark.parametrize(("args", "typo"), LEFT_TO_HYDRA)
def test_flags_and_sweeps_are_left_to_hydra(
    args: list[str], typo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a flag or a sweep Hydra composes the config its own way: the check composes nothing and steps
    aside, though the same typo on its own is refused in one line that names it."""
    import geoseg.overrides

    composed: list[tuple] = []
    with monkeypatch.context() as patch:
        patch.setattr(geoseg.overrides, "compose_all", lambda *a: composed.append(a))
        check_overrides("train", "train", args)
    assert composed == []
    key, _, value = typo.partition("=")
    with pytest.raises(GeosegError, match=re.escape(key if key.startswith("trainer.") else value)):
        check_overrides("train", "train", [typo])


def test_a_run_after_a_typo_with_tricky_overrides(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo_root: Path
) -> None:
    """The check leaves Hydra usable: a typo, then a real stats run in the same process with the overrides
    a stricter check could trip on."""
    run_error(capsys, "stats", "data.chip_sise=3")
    try:
        main(["stats", f"data.root={demo_root}", "data.demo=null", "progress=false", "data.bands=[1,4]",
              "data.label_nodata=null", "data.splits.train.labels='train/labels/{stem}.tif'",
              f"+out_dir='{tmp_path}'", "output=${out_dir}/stats.json",
              f"hydra.run.dir={tmp_path}/run"])  # fmt: skip
    finally:
        drop_hydra_log_handlers()
    assert json.loads((tmp_path / "stats.json").read_text())["bands"] == [1, 4]


def test_a_typo_is_one_line_from_the_console_script(tmp_path: Path, geoseg) -> None:
    """The installed entry point (a subprocess): status 2, one line, no Hydra text."""
    run = geoseg("train", "trainer.max_epoch=3", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "geoseg: error: unknown option 'trainer.max_epoch'; did you mean 'trainer.max_epochs'? "
        "(every option: geoseg train --help)"
    ]
    assert not (tmp_path / "outputs").exists()  # nothing was created before the check


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


def test_a_disk_full_error_from_outside_geosegs_writers_becomes_one_line():
    import errno

    from geoseg.cli import disk_error

    full = disk_error(OSError(errno.ENOSPC, "No space left on device", "/runs/x/events.out"))
    assert str(full) == (
        "could not write '/runs/x/events.out' (No space left on device); "
        "free disk space or choose another folder"
    )
    other = OSError(errno.ENOENT, "No such file or directory", "/nope")
    assert disk_error(other) is other  # not a disk problem: left as it is


def test_a_check_inside_a_config_target_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo_root: Path
) -> None:
    """A GeosegError raised while Hydra instantiates a ``_target_`` (here the loss's own check) is shown
    as its one line, not as Hydra's "Error in call to target ..." block."""
    try:
        line = run_error(capsys, "train", f"data.root={demo_root}", "data.demo=null",
                         "loss.label_smoothing=2", f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    finally:
        drop_hydra_log_handlers()
    assert line == "geoseg: error: loss.label_smoothing=2 must be a number in [0, 1], e.g. 0.1"


def test_a_yes_no_option_given_as_a_word_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, demo_root: Path
) -> None:
    """``progress=no`` is the string 'no', which reads as true: refused, naming the option."""
    try:
        line = run_error(capsys, "stats", f"data.root={demo_root}", "data.demo=null", "progress=no",
                         f"output={tmp_path}/stats.json", f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    finally:
        drop_hydra_log_handlers()
    assert line == "geoseg: error: progress='no' must be true or false"
    assert not (tmp_path / "stats.json").exists()
    assert flag({"strict": True}, "strict") is True and flag({}, "overviews", True) is True
    with pytest.raises(GeosegError, match=r"^data.persistent_workers=1 must be true or false$"):
        flag({"persistent_workers": 1}, "persistent_workers", True, "data.")


@pytest.mark.parametrize(
    ("value", "whole", "real"),
    [
        (3, True, True),
        (0, True, True),
        (2.5, False, True),
        (True, False, False),
        ("3", False, False),
        (float("nan"), False, False),
        (float("inf"), False, False),
        (None, False, False),
    ],
)
def test_number_options_refuse_bools_strings_and_non_finite_values(value, whole, real):
    """YAML's ``yes`` is a bool and ``.inf``/``.nan`` are floats: neither may pass as a count or a rate."""
    assert is_whole(value) is whole
    assert is_real(value) is real


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("train", "seed=abc"), "seed='abc' must be a whole number >= 0, e.g. seed=0"),
        (("train", "seed=-1"), "seed=-1 must be a whole number >= 0, e.g. seed=0"),
        (
            ("train", "encoder.depth=abc"),
            "encoder.depth='abc' must be a whole number >= 1, e.g. encoder.depth=5",
        ),
        (
            ("train", "optim.optimizer.lr=abc"),
            "optim.optimizer.lr='abc' must be a number, e.g. optim.optimizer.lr=1e-3",
        ),
        (
            ("train", "loss=ce_dice", "loss.losses.1.ignore_index=0"),
            "loss.losses.1.ignore_index=0 differs from data.ignore_index=255, the value the masks mark "
            "ignored pixels with; drop the override (loss configs follow data.ignore_index)",
        ),
        (("demo-data", "size=0"), "size=0 must be a whole number >= 64, e.g. size=512"),
        (("demo-data", "overwrite=no"), "overwrite='no' must be true or false"),
        (
            ("export", "checkpoint=missing.pt", "opset=abc"),
            "opset='abc' must be a whole number >= 7, e.g. opset=18",
        ),
        (("model-info", "batch_size=0"), "batch_size=0 must be a whole number >= 1, e.g. batch_size=2"),
        (
            ("index", "splits=abc"),
            "splits='abc' must be a list of data.splits entries, e.g. splits=[train,val]",
        ),
        (("index", "progress=maybe"), "progress='maybe' must be true or false"),
        (
            ("evaluate", "prediction=p.tif", "labels=l.tif", "classes=abc"),
            "classes= must be a list of {code, name, color} entries, got 'abc'.",
        ),
        (
            ("model-info", "batch_size=1", "model=deeplabv3plus"),
            "batch_size=1 with BatchNorm2d layers: BatchNorm needs at least 2 chips per GPU; "
            "raise batch_size or use norm=groupnorm (or instancenorm, layernorm)",
        ),
    ],
)
def test_options_of_each_command_are_one_line(
    args: tuple[str, ...], line: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, demo_root: Path
) -> None:
    """These raised a ValueError traceback from ``int()``/``float()`` or deep in torch (``seed=-1``,
    BatchNorm on DeepLabV3+'s 1×1 pooled map at one chip) or were accepted and misread (``progress=maybe``
    is a truthy string; ``splits=abc`` was read letter by letter; a loss ``ignore_index`` other than the
    masks' trained the ignored pixels as a class or failed in torch)."""
    data = [f"data.root={demo_root}", "data.demo=null"] if args[0] in ("train", "model-info", "index") else []
    where = [f"root={tmp_path}/demo"] if args[0] == "demo-data" else []
    try:
        got = run_error(capsys, *args, *data, *where, f"hydra.run.dir={tmp_path}/run")
    finally:
        drop_hydra_log_handlers()
    assert got == f"geoseg: error: {line}"
    assert not (tmp_path / "demo").exists()
