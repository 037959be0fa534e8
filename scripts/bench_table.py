"""A benchmark's Markdown table: a dated header naming the machine and the command, then the rows;
printed and, with ``output``, written atomically."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


def emit_table(
    notes: Sequence[str], header: str, align: str, rows: Sequence[str], output: Path | None
) -> str:
    """Print (and write to ``output``) ``header``/``align``/``rows`` under the date, machine, command and
    ``notes`` lines; return the text."""
    top = [
        f"# {datetime.date.today()} | {platform.node()} | {os.cpu_count()} CPUs",
        f"# python {shlex.join(sys.argv)}",
    ]
    text = "\n".join([*top, *(f"# {n}" for n in notes), header, align, *rows]) + "\n"
    print(text)
    if output is not None:
        from geoseg.io import atomic_write_text

        atomic_write_text(output, text, "benchmark table")
    return text
