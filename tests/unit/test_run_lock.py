"""The run folder's lock file: who holds it, and what a later run in the same folder is told."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest

from geoseg.engine.run_lock import LOCK_NAME, run_lock
from geoseg.errors import GeosegError

WARNING = "which is no longer running; taking it over"


def test_a_run_that_ends_or_fails_leaves_no_owner_so_the_next_run_is_not_warned(tmp_path, caplog):
    with run_lock(str(tmp_path)):
        assert f"pid={os.getpid()}" in (tmp_path / LOCK_NAME).read_text()
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with pytest.raises(GeosegError), run_lock(str(tmp_path)):
        raise GeosegError("a bad option found after the lock was taken")
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with caplog.at_level(logging.WARNING), run_lock(str(tmp_path)):
        pass
    assert WARNING not in caplog.text


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    (tmp_path / LOCK_NAME).write_text(f"pid={dead}\nhost={socket.gethostname()}\nstarted=then\n")
    with caplog.at_level(logging.WARNING), run_lock(str(tmp_path)):
        pass
    assert f"was locked by PID {dead}, {WARNING}" in caplog.text
