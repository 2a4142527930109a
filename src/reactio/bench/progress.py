"""A progress line on stderr during long runs, at most about once a second.

On a terminal the line is rewritten in place; otherwise (a log file, CI) each update is a
new line, and nothing at all is printed for runs shorter than a second.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool = True, interval: float = 1.0):
        self.enabled = enabled
        self.interval = interval
        self.tty = sys.stderr.isatty()
        self._started = time.monotonic()
        self._last = self._started
        self._shown = False

    def start(self) -> None:
        """A new run begins: its first line waits a full interval."""
        self._started = self._last = time.monotonic()

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        """Remove the in-place line before normal output follows."""
        if self._shown and self.tty:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
        self._shown = False

    def note(self, text: str) -> None:
        """A line that stays (a leg skipped, a failure)."""
        self.clear()
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
