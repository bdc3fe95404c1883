"""Silencing one library's log records around the one call that raises them, never for good."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def logger_quiet_below(name: str, level: int) -> Iterator[None]:
    """Within the block, records of logger `name` below `level` are dropped; its level comes back after."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
