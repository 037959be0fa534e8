"""One training run per run folder: an exclusive ``fcntl`` lock on ``<run dir>/.geoseg.lock``.

Two ``geoseg train`` runs started in one folder (the same ``hydra.run.dir``) would both write
``last.pt``, ``best.pt`` and ``summary.json``. The lock file holds the owner's PID, host and start
time, and is emptied when the run ends (finished, stopped or failed with an error). The kernel drops the
lock when its process dies, so a lock left by a killed run is taken over (with a warning naming the dead
PID); a live one is a one-line error. Only rank 0 takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator

from geoseg.errors import GeosegError
from geoseg.io import WRITE_FIX, ensure_writable_dir, write_errors

log = logging.getLogger(__name__)

LOCK_NAME = ".geoseg.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(fd: int) -> dict[str, str]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


@contextlib.contextmanager
def run_lock(run_dir: str, enabled: bool = True) -> Iterator[None]:
    """Hold the run folder's lock for the block; a one-line error when another live run holds it."""
    if not enabled:
        yield
        return
    ensure_writable_dir(run_dir, "run folder")
    path = os.path.join(run_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            raise GeosegError(
                f"run folder '{run_dir}' is in use by another geoseg train (PID {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}, since {owner.get('started', '?')}); wait for it to finish, or "
                "choose another hydra.run.dir"
            ) from None
        previous = _owner(fd)
        here = socket.gethostname()
        if (
            previous.get("pid", "").isdigit()
            and previous.get("host") == here
            and not _alive(int(previous["pid"]))
        ):
            log.warning("run folder %s was locked by PID %s, which is no longer running; taking it over",
                        run_dir, previous["pid"])  # fmt: skip
        with write_errors(path, "run lock", WRITE_FIX):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            os.write(fd, f"pid={os.getpid()}\nhost={here}\nstarted={started}\n".encode())
        try:
            yield
        finally:  # any exit this process lives through leaves no owner, so the next run has no warning
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock; the file stays (empty, or naming a run that died holding it)
