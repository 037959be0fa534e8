"""The log line format of geoseg's commands: ``16:40:36 epoch 4/4 ...``, levels named only when they matter.

Hydra's default prefix, ``[2026-12-02 16:40:36,635][geoseg.engine.log][INFO] - ``, is 55 characters
of every line. Here a line starts with the time (the date too in the run folder's log file), and
only warnings and errors say their level, so they stand out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from geoseg.url_text import without_secrets


class ShortFormatter(logging.Formatter):
    """``TIME message``, or ``TIME WARNING: message`` at WARNING and above; a URL in a line is shown
    without its query string or user info (a signed URL's token never reaches the terminal or train.log)."""

    def __init__(self, datefmt: str = "%H:%M:%S") -> None:
        super().__init__(fmt="%(asctime)s %(message)s", datefmt=datefmt)
        self.loud = logging.Formatter(fmt="%(asctime)s %(levelname)s: %(message)s", datefmt=datefmt)

    def format(self, record: logging.LogRecord) -> str:
        line = self.loud.format(record) if record.levelno >= logging.WARNING else super().format(record)
        return without_secrets(line) if "?" in line or "@" in line else line


@contextmanager
def quieted(logger: logging.Logger | str, level: int = logging.WARNING) -> Iterator[None]:
    """``logger`` (or the logger of that name) shows only records at ``level`` and above in the block."""
    logger = logging.getLogger(logger) if isinstance(logger, str) else logger
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
