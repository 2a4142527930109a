"""A progress line on stderr during long runs, at most about once a second.

On a terminal the line is rewritten in place about once a second; otherwise (a log file,
CI) an update is a new line, at most one every five seconds so that logs stay readable.
Nothing is printed for invocations shorter than one interval.
"""
from __future__ import annotations

import sys
import time
from typing import Optional


class Progress:
    def __init__(self, enabled: bool = True, interval: Optional[float] = None) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.interval = interval if interval is not None else (1.0 if self.tty else 5.0)
        self._last = time.monotonic()
        self._shown = False

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
