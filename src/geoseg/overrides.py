"""Config typos on the command line as one-line GeosegErrors, found before Hydra runs the command.

Hydra reports a misspelt key, an unknown config group option or a malformed override in several
lines and exits with status 1; :func:`check_overrides` composes the command's config once with the
same overrides (about 0.1 s) and turns Hydra's error into one ``geoseg: error:`` line instead.
"""

from __future__ import annotations

import os
import re
from difflib import get_close_matches
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf

from geoseg.config import config_dir
from geoseg.errors import GeosegError

GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic"
NOT_OVERRIDDEN = re.compile(r"Could not override '([^']+)'\.( No match in the defaults list\.)?")


def parse(overrides: list[str]) -> list[Override]:
    """Hydra's parse of each override; a malformed one is a GeosegError naming it."""
    parser = OverridesParser.create()
    parsed: list[Override] = []
    for line in overrides:
        try:
            override = parser.parse_override(line)
        except HydraException as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if "{" in line and "=" in line and not line.split("=", 1)[1].startswith(("{", "[", '"', "'")):
                key, value = line.split("=", 1)
                reason += f"; quote a value with braces such as {{file}}: '{key}=\"{value}\"'"
            raise GeosegError(f"malformed override '{line}': {reason} (see {GRAMMAR})") from None
        if not override.key_or_group:
            raise GeosegError(f"malformed override '{line}': no key before '=' (see {GRAMMAR})")
        parsed.append(override)
    return parsed


def changes(override: Override) -> bool:
    """Whether ``override`` sets an existing key (``key=value``, not ``+key=``, ``++key=`` or ``~key``)."""
    return not (override.is_add() or override.is_force_add() or override.is_delete())


def compose_all(config_name: str, overrides: list[str], primary_dir: str | None = None) -> DictConfig:
    """The command's config composed with ``overrides``, the ``hydra`` node included; ``primary_dir`` is
    the folder of ``config_name`` when that is not one of geoseg's configs (a resumed run's).

    GlobalHydra is initialised only inside this call, so the real Hydra app can run afterwards.
    """
    with initialize_config_dir(config_dir=primary_dir or str(config_dir()), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=True)


def closest_key(key: str, tree: object) -> str | None:
    """The existing dotted key nearest to ``key``, each unknown part replaced by its closest sibling."""
    path: list[str] = []
    fixed = False
    for part in key.split("."):
        if not isinstance(tree, dict):
            return None
        if part not in tree:
            close = get_close_matches(part, [str(k) for k in tree], n=1)
            if not close:
                return None
            part, fixed = close[0], True
        path.append(part)
        tree = tree[part]
    return ".".join(path) if fixed else None


def unknown_key(command: str, config_name: str, key: str, parsed: list[Override], group: bool) -> str:
    """``unknown option 'KEY'; did you mean 'NEAR'? (where to see every option)``, or, when no existing key
    is near, ``unknown option 'KEY' (how to add it; where to see every option)``."""
    line = next(o.input_line for o in reversed(parsed) if o.key_or_group == key and changes(o))
    others = [o.input_line for o in parsed if o.key_or_group != key]
    near = None
    for base in (others, []):  # the config as the user's other overrides shape it, else the default one
        try:
            tree = OmegaConf.to_container(compose_all(config_name, base), resolve=False)
        except Exception:  # a second typo: try the config without overrides
            continue
        near = closest_key(key, tree)
        break
    where = "--cfg hydra" if key.split(".")[0] == "hydra" else "--help"
    if near:  # almost surely a typo of an existing key: never suggest adding the misspelt one with +
        return f"unknown option '{key}'; did you mean '{near}'? (every option: geoseg {command} {where})"
    if group:
        how = f"geoseg {command} does not use config group {key}; add it with +{line}"
    else:
        how = f"add a new key with +{line}; every option: geoseg {command} {where}"
    return f"unknown option '{key}' ({how})"


def unknown_choice(err: MissingConfigException) -> str:
    """``unknown GROUP 'OPTION'; did you mean 'NEAR'? (choose from A, B, C)``."""
    group, _, option = (err.missing_cfg_file or "").rpartition("/")
    options = list(err.options or [])
    if not group:
        return str(err).strip().splitlines()[0]
    near = get_close_matches(option, options, n=1)
    hint = f"; did you mean '{near[0]}'?" if near else ""
    choices = f" (choose from {', '.join(options)})" if options else ""
    return f"unknown {group} '{option}'{hint}{choices}"


def one_line(err: BaseException) -> str:
    """Any other Hydra composition error, its lines joined into one."""
    lines = [ln.strip().rstrip(".") for ln in str(err).strip().splitlines() if ln.strip()]
    return "; ".join(lines) if lines else type(err).__name__


def split_config_dir(args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` without ``--config-dir DIR`` (``-cd DIR``, ``--config-dir=DIR``), and those DIRs
    (absolute): a user's own configs, searched before geoseg's as Hydra does."""
    rest, dirs = [], []
    it = iter(args)
    for arg in it:
        if arg in ("--config-dir", "-cd"):
            dirs.append(next(it, ""))
        elif arg.startswith("--config-dir="):
            dirs.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    return rest, [os.path.abspath(d) for d in dirs if d]


def check_config_dirs(dirs: list[str], limit: int = 500) -> None:
    """A ``--config-dir`` that is no folder, or holds a YAML file with a syntax error: one line, not
    Hydra's message or traceback (also with ``-m`` and other flags, which skip the composition check)."""
    for folder in dirs:
        if not os.path.isdir(folder):
            what = "is a file" if os.path.exists(folder) else "does not exist"
            raise GeosegError(f"--config-dir '{folder}' {what}; give the folder holding your data/NAME.yaml "
                              "(geoseg init-data writes conf/ by default)")  # fmt: skip
        for path in sorted(Path(folder).rglob("*.yaml"))[:limit]:
            try:
                yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
            except yaml.YAMLError as err:
                if getattr(err, "problem_mark", None) is not None:
                    err.problem_mark.name = str(path)
                raise GeosegError(yaml_error(err)) from None
            except OSError:
                continue


def yaml_error(err: yaml.YAMLError) -> str:
    """``'conf/data/x.yaml' line 3, column 7: expected ',' or ']' ...``: a YAML syntax error in one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"'{mark.name}' line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
    context = getattr(err, "context", None)
    return f"{where} is not valid YAML: {problem}{f' ({context})' if context else ''}; fix that line"


def check_overrides(
    command: str, config_name: str, args: list[str], primary_dir: str | None = None
) -> DictConfig | None:
    """Compose ``config_name`` (in ``primary_dir`` when given) with the overrides in ``args``; raise a
    one-line GeosegError on a typo. Returns the composed config (the ``hydra`` node included), or None
    where the check is left to Hydra.

    Left to Hydra: any flag (``-m``, ``--cfg``, ``--help``, ...), sweeps (``norm=a,b``) and any
    failure that is not a Hydra composition error.
    """
    args, dirs = split_config_dir(args)
    check_config_dirs(dirs)
    search = [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else []
    if any(a.startswith("-") for a in args) or GlobalHydra.instance().is_initialized():
        return None
    parsed = parse(args)
    if any(o.is_sweep_override() for o in parsed):
        return None
    try:
        return compose_all(config_name, [*args, *search], primary_dir)
    except GeosegError:  # geoseg's configs not found
        raise
    except MissingConfigException as err:
        raise GeosegError(unknown_choice(err)) from None
    except yaml.YAMLError as err:  # a config file of the user's that is no valid YAML
        raise GeosegError(yaml_error(err)) from None
    except HydraException as err:
        match = NOT_OVERRIDDEN.match(str(err))
        if match and any(o.key_or_group == match[1] and changes(o) for o in parsed):
            raise GeosegError(unknown_key(command, config_name, match[1], parsed, bool(match[2]))) from None
        raise GeosegError(one_line(err)) from None
    except Exception:  # not a config error geoseg knows: the Hydra app reports it as before
        return None
