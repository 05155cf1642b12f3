"""A log that says a repeating failure once per period with how often it happened, instead of once per
attempt: a client retrying a refused or absent broker every second would otherwise fill the log.
"""

from __future__ import annotations

import logging
import threading
import time


class ThrottledLog:
    """At most one line per cause every `period_s`, saying how often it happened since its last line."""

    def __init__(self, logger: logging.Logger, period_s: float = 60.0) -> None:
        self.logger = logger
        self.period_s = period_s
        self._lock = threading.Lock()
        self._causes: dict[str, tuple[int, float]] = {}  # cause -> (count since its last line, last line at)
        self.total = 0  # occurrences since the last reset()

    def note(self, cause: str, line: str, level: int = logging.WARNING) -> bool:
        """Count one occurrence of `cause`; log `line` and the count when its period is over (then True)."""
        now = time.monotonic()
        with self._lock:
            self.total += 1
            count, last = self._causes.get(cause, (0, -1.0))
            count += 1
            if last >= 0 and now - last < self.period_s:
                self._causes[cause] = (count, last)
                return False
            self._causes[cause] = (0, now)
        times = "1 attempt" if count == 1 else f"{count} attempts since the last such line"
        self.logger.log(level, "%s (%s; retrying)", line, times)
        return True

    def reset(self) -> int:
        """Forget every cause (the next occurrence is logged at once); returns how many were counted."""
        with self._lock:
            total, self.total = self.total, 0
            self._causes.clear()
        return total
