"""Small utilities kept from reactio: a monotonic Timer and log-level compatibility."""
from __future__ import annotations

import logging
import time

from reactio._core import monotonic_ns

__all__ = ["Timer", "monotonic_ns", "set_log_level", "LOG_LEVEL_ERROR", "LOG_LEVEL_INFO",
           "LOG_LEVEL_TRACE", "LOG_LEVEL_DEBUG"]

LOG_LEVEL_ERROR, LOG_LEVEL_INFO, LOG_LEVEL_TRACE, LOG_LEVEL_DEBUG = 0, 1, 2, 3
_LEVELS = {LOG_LEVEL_ERROR: logging.ERROR, LOG_LEVEL_INFO: logging.INFO,
           LOG_LEVEL_TRACE: logging.DEBUG, LOG_LEVEL_DEBUG: logging.DEBUG}


def set_log_level(level: int) -> None:
    """reactio's levels (0 error, 1 info, 2 trace, 3 debug) mapped onto the ``reactio``
    logger; a ``logging`` level (10, 20, ...) is also accepted."""
    logging.getLogger("reactio").setLevel(_LEVELS.get(level, level))


class Timer:
    """A deadline on the monotonic clock (reactio's utils::Timer, without its unit bug)."""

    def __init__(self, seconds: float) -> None:
        self.start_ns = monotonic_ns()
        self.deadline_ns = self.start_ns + int(seconds * 1e9)

    @classmethod
    def new_millis(cls, ms: float) -> "Timer":
        return cls(ms / 1000.0)

    def expired(self) -> bool:
        return monotonic_ns() >= self.deadline_ns

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0, self.deadline_ns - monotonic_ns()) / 1e9

    def elapsed_millis(self) -> float:
        return (monotonic_ns() - self.start_ns) / 1e6

    def sleep_or_expire(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until the deadline, whichever is first; True if expired."""
        time.sleep(min(seconds, self.remaining()))
        return self.expired()
