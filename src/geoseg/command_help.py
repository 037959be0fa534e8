"""``geoseg <command> --help``: that command's config groups and every option with its YAML comment.

Hydra's own ``--help`` lists the groups of every command and no descriptions, though the YAML files
describe each option in a trailing comment. This reads those comments straight from the config files
(the primary config and the option each group selects, with what that option inherits from another
option of its group), so the help cannot drift from the configs.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

KEY_LINE = re.compile(
    r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w.]*):(?P<value>[^#]*?)\s*(?:#\s?(?P<comment>.*))?$"
)
SKIPPED_GROUPS = ("hydra", "launcher")  # Hydra's own settings and the multirun launcher: not options


@dataclass
class Option:
    """One config key: its dotted name, its default as written and its description."""

    key: str
    value: str
    comment: str


def parse_options(text: str, prefix: str = "") -> list[Option]:
    """Every ``key: value  # comment`` of a YAML file, nested keys dotted. A comment-only line that
    continues the previous key's comment (indented deeper than that key) is appended to it; the
    ``defaults`` list and list items are skipped."""
    options: list[Option] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    in_defaults = False
    last: Option | None = None
    last_indent = -1
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped or stripped.startswith("- "):
            last = None if not stripped else last
            continue
        if stripped.startswith("#"):
            if last is not None and indent > last_indent:
                last.comment = f"{last.comment} {stripped.lstrip('#').strip()}".strip()
            continue
        match = KEY_LINE.match(line)
        if not match:
            last = None
            continue
        key, value = match["key"], match["value"].strip()
        if indent == 0:
            in_defaults = key in ("defaults", "hydra")  # the defaults list and Hydra's own settings
        if in_defaults or key.startswith("_"):
            last = None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(k for _, k in stack), key])
        if not value:  # a mapping (or a list) opens
            stack.append((indent, key))
        last = Option(f"{prefix}{dotted}", value, (match["comment"] or "").strip())
        last_indent = indent
        options.append(last)
    return options


def group_choices(roots: list[Path], group: str) -> list[str]:
    """The options of a config group: the YAML files in its folder under every config root."""
    return sorted({p.stem for root in roots for p in (root / group).glob("*.yaml")})


def find_config(roots: list[Path], group: str, option: str) -> Path | None:
    """``group/option.yaml`` in the first root that has it (a user's --config-dir before geoseg's)."""
    paths = (root / group / f"{option}.yaml" for root in roots)
    return next((path for path in paths if path.is_file()), None)


def group_options(roots: list[Path], group: str, option: str, seen: tuple[str, ...] = ()) -> list[Option]:
    """The options of ``group/option.yaml`` with those it inherits from configs of its own group (its
    ``defaults`` list, e.g. ``- demo``): a base's options first, each overridden in place by this file's
    value (and comment, when it has one), then this file's own new options."""
    path = find_config(roots, group, option)
    if path is None or option in seen:
        return []
    merged: dict[str, Option] = {}
    for base in OmegaConf.load(path).get("defaults") or []:
        if isinstance(base, str) and base != "_self_" and "/" not in base and "@" not in base:
            merged.update((o.key, o) for o in group_options(roots, group, base, (*seen, option)))
    for own in parse_options(path.read_text(), prefix=f"{group}."):
        inherited = merged.get(own.key)
        comment = own.comment or (inherited.comment if inherited else "")
        merged[own.key] = Option(own.key, own.value, comment)
    return list(merged.values())


def selected_groups(root: Path, config_name: str, overrides: list[str]) -> list[tuple[str, str | None]]:
    """``(group, option)`` from the primary config's defaults list, with ``group=option`` overrides."""
    defaults = OmegaConf.load(root / f"{config_name}.yaml").get("defaults") or []
    chosen: dict[str, str | None] = {}
    for entry in defaults:
        if isinstance(entry, dict) or OmegaConf.is_dict(entry):
            for group, option in dict(entry).items():
                group = str(group).removeprefix("override ").lstrip("/")
                if group not in SKIPPED_GROUPS:
                    chosen[group] = None if option is None else str(option)
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+") in chosen:
            chosen[key.lstrip("+")] = value
    return list(chosen.items())


def format_options(options: list[Option], width: int = 110) -> list[str]:
    """Aligned ``key: value  description`` lines."""
    if not options:
        return []
    left = [f"  {o.key}: {o.value}".rstrip(": ") if o.value else f"  {o.key}:" for o in options]
    col = min(max(len(s) for s in left) + 2, 40)
    lines = []
    for head, option in zip(left, options, strict=True):
        text = textwrap.wrap(option.comment, max(width - col, 30)) or [""]
        if len(head) + 2 <= col:
            lines.append(f"{head:<{col}}{text[0]}".rstrip())
        else:
            lines += [head, f"{'':<{col}}{text[0]}".rstrip()] if text[0] else [head]
        lines += [f"{'':<{col}}{t}" for t in text[1:]]
    return lines


def command_help(
    name: str, summary: str, root: Path, config_name: str, overrides: list[str], extra: Sequence[str] = ()
) -> str:
    """The help text of ``geoseg <name>`` for its primary config ``config_name`` under ``root``, with
    the config folders ``extra`` (``--config-dir``) searched first."""
    roots = [*(Path(e) for e in extra), root]
    primary = root / f"{config_name}.yaml"
    out = [
        f"usage: geoseg {name} [key=value ...] [group=option ...] [-m] [--cfg job --resolve]",
        "",
        f"{summary}.",
        f"Configs: {root} (add your own with --config-dir DIR; see `geoseg init-data`).",
    ]
    groups = selected_groups(root, config_name, overrides)
    if groups:
        out += ["", "Config groups (pick one with group=option; `group=option --help` shows its options):"]
        for group, option in groups:
            choices = ", ".join(group_choices(roots, group))
            out.append(f"  {group}={option if option is not None else 'null'}  (choices: {choices})")
    out += ["", f"Options of {primary.name} (override with key=value):"]
    out += format_options(parse_options(primary.read_text()))
    for group, option in groups:
        path = None if option is None else find_config(roots, group, option)
        if path is None or "@package _global_" in path.read_text():
            continue
        where = f"{group}/{option}.yaml" if path.parent.parent == root else str(path)
        out += ["", f"{group}={option} ({where}):"]
        out += format_options(group_options(roots, group, option))
    return "\n".join(out)
