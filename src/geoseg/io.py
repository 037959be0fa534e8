"""Atomic file writes (a temporary name in the same folder, fsync, then rename), and strict-JSON values."""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from geoseg.errors import GeosegError, first_line

log = logging.getLogger(__name__)

WRITE_FIX = "Free disk space or choose another folder, and rerun."
RESUME_FIX = "Free disk space, then rerun with trainer.resume=auto."


@contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[str]]:
    """Temporary names next to ``paths``; renamed onto them together if the block succeeds, else removed.

    Each temporary file is hidden (``.name.XXXX.tmp``) in its target's folder, so the rename is atomic
    and an interrupted run leaves nothing under a final name. Temporary files of the same target left
    by a killed process (SIGKILL runs no cleanup) are removed first.
    """
    targets = [Path(p) for p in paths]
    tmps: list[str] = []
    try:
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmps.append(tmp)
    except OSError as err:
        _remove(tmps)
        raise GeosegError(f"cannot write '{path}' ({err.strerror}); choose a writable folder.") from None
    try:
        yield tmps
        for tmp, path in zip(tmps, targets, strict=True):
            with write_errors(path, "file", WRITE_FIX):
                os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs should be readable like any other file
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
    finally:
        _remove(tmps)


def remove_stale_temporaries(path: Path) -> None:
    """Delete ``.name.*.tmp`` files (and a COG conversion's ``.tmp.cog``) an interrupted write left."""
    pattern = os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")
    for stale in glob.glob(pattern) + glob.glob(pattern + ".cog"):
        log.info("removing %s, left by an interrupted write", stale)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)


@contextmanager
def write_errors(path: str | os.PathLike, what: str, fix: str) -> Iterator[None]:
    """Turn an :class:`OSError` while writing ``path`` (disk full, quota, I/O) into one clear line."""
    try:
        yield
    except OSError as err:
        folder = os.path.dirname(os.path.abspath(path))
        free = shutil.disk_usage(folder).free / 2**20 if os.path.isdir(folder) else 0.0
        state = (
            "the existing file is unchanged"
            if os.path.exists(path)
            else "nothing was written under that name"
        )
        raise GeosegError(
            f"could not write {what} '{path}' ({err.strerror or first_line(err)}; {free:.0f} MiB free in "
            f"{folder}); {state}. {fix}"
        ) from None


def ensure_free_space(path: str | os.PathLike, needed: int, purpose: str, fix: str) -> None:
    """Fail now when the disk holding ``path`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(path).free
    if free < needed:
        raise GeosegError(
            f"'{path}' has {free / 2**20:.0f} MiB free and {purpose} needs about "
            f"{needed / 2**20:.0f} MiB; {fix}"
        )


def _remove(paths: list[str]) -> None:
    for tmp in paths:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], None], what: str = "file", fix: str = WRITE_FIX
) -> None:
    """Call ``write(tmp_path)`` and rename the temporary file onto ``path`` only if it succeeds.

    Every file geoseg writes goes through here or :func:`atomic_paths`: a failed write (disk full,
    quota, read-only or missing folder, I/O error) is one line naming ``what`` and ``path``.
    """
    with atomic_paths(path) as (tmp,), write_errors(path, what, fix):
        write(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "file", fix: str = WRITE_FIX) -> None:
    """Write ``text`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)

    atomic_write(path, write, what, fix)


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


def json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
