"""One module per ``geoseg`` command, each exposing ``run(cfg)``; the command table is read from them.

The module ``commands/<config>.py`` is the command ``<config>`` with ``-`` for ``_`` (``init_data``
is ``init-data``); it composes ``configs/<config>.yaml``, its docstring's first line
(`` ``geoseg <command> ...``: <what it does> ``) is the command's help line, and a module-level
``POSITIONAL = "<option>"`` makes the first bare argument set that option (``geoseg report DIR``).
The table is read from the sources without importing them, so ``geoseg --help`` stays instant.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Command:
    """A ``geoseg`` command: its module, primary config, help line and positional option."""

    name: str
    module: str
    config: str
    help: str
    positional: str | None = None


def _describe(path: Path) -> Command:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree) or ""
    first = doc.splitlines()[0] if doc else ""
    usage, _, what = first.partition("``: ")
    positional = next(
        (node.value.value for node in tree.body if isinstance(node, ast.Assign)
         and [getattr(t, "id", None) for t in node.targets] == ["POSITIONAL"]
         and isinstance(node.value, ast.Constant)),
        None,
    )  # fmt: skip
    name = path.stem.replace("_", "-")
    help_line = (what or usage).strip().rstrip(".").replace("``", "`")
    return Command(name, f"{__name__}.{path.stem}", path.stem, help_line, positional)


def command_table() -> dict[str, Command]:
    """Every command, by name, in alphabetical order."""
    here = Path(__file__).parent
    paths = sorted(p for p in here.glob("*.py") if not p.name.startswith("_"))
    return {command.name: command for command in map(_describe, paths)}
