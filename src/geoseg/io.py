"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from geoseg.errors import GeosegError


@contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[str]]:
    """Temporary names next to ``paths``; renamed onto them together if the block succeeds, else removed.

    Each temporary file is hidden (``.name.XXXX.tmp``) in its target's folder, so the rename is atomic
    and an interrupted run leaves nothing under a final name.
    """
    targets = [Path(p) for p in paths]
    tmps: list[str] = []
    try:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmps.append(tmp)
    except OSError as err:
        _remove(tmps)
        raise GeosegError(f"cannot write '{path}' ({err.strerror}); choose a writable folder.") from None
    try:
        yield tmps
        for tmp, path in zip(tmps, targets, strict=True):
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs should be readable like any other file
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    finally:
        _remove(tmps)


def _remove(paths: list[str]) -> None:
    for tmp in paths:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename the temporary file onto ``path`` only if it succeeds."""
    with atomic_paths(path) as (tmp,):
        write(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write)


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> None:
    """Create ``path`` and prove it takes a file now, not after hours of work."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise GeosegError(
            f"cannot write to the {what} '{path}' ({reason}); choose a writable folder"
        ) from None
