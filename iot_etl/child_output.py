"""Where the output of `up`'s processes goes: all of it into one log file per process, and of it only
warnings and errors onto `up`'s own output, one line each.

Dagster's daemon, webserver and code servers log a line per sensor tick and heartbeat at INFO; a user of
`up` wants to see what the pipeline did (the window lines) and what went wrong, not that. The code servers
and run workers are children of the daemon and the webserver and write into their logs.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from iot_core.settings import Settings
from iot_etl.dagster_instance import dagster_home

# `2026-11-29 19:20:01 +0000 - dagster.daemon.SensorDaemon - WARNING - message` (Dagster's own format)
_DAGSTER_LINE = re.compile(r"^\S+ \S+ [+-]\d{4} - (?P<logger>\S+) - (?P<level>[A-Z]+) - (?P<message>.*)$")
# `/path/module.py:12: SomeWarning: message` (Python's warnings module; the next line repeats the source)
_PYTHON_WARNING = re.compile(r"^\S+\.py:\d+: (?P<message>\w*Warning: .*)$")
_SHOWN_LEVELS = {"WARNING", "ERROR", "CRITICAL", "FATAL"}
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
# warnings that say nothing is wrong: the daemon's event-log consumer on an instance without its cursor
# yet; a code server the daemon or webserver has replaced (it stops getting heartbeats and exits)
_NOT_NEWS = (
    re.compile(r"^No cursor for event type \S+, ignoring older events$"),
    re.compile(r"^No heartbeat received in \d+ seconds, shutting down$"),
)
#: the same condensed line again within this time is counted, not shown
REPEAT_QUIET_S = 300.0


def logs_dir(settings: Settings) -> Path:
    """`<state folder>/logs`, beside the Dagster home and the embedded services' data."""
    return dagster_home(settings).parent / "logs"


def open_log(path: Path) -> IO[bytes]:
    """The log of one process; the previous start's log is kept as `<name>.1`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        path.replace(path.with_name(path.name + ".1"))
    # closed by `pump` when the process's output ends
    return open(path, "ab", buffering=0)


class Condenser:
    """Turns one process's output, line by line, into the few lines a user should see: log records at
    WARNING and above (Dagster's format or structlog's JSON), Python warnings, and the last line of a
    traceback (the exception). Everything else yields nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._in_traceback = False

    def feed(self, line: str) -> str | None:
        line = _COLOUR.sub("", line).rstrip()
        if not line:
            return None
        if line.startswith("Traceback (most recent call last)"):
            self._in_traceback = True
            return None
        if self._in_traceback:
            if line[0].isspace() or line.startswith(("During handling", "The above exception")):
                return None
            self._in_traceback = False
            return f"{self.name}: error: {line} (traceback in its log)"
        return self._record(line)

    def _record(self, line: str) -> str | None:
        if match := _DAGSTER_LINE.match(line):
            if match["level"] in _SHOWN_LEVELS and not any(p.match(match["message"]) for p in _NOT_NEWS):
                return f"{self.name}: {match['level'].lower()}: {match['message']}"
            return None
        if match := _PYTHON_WARNING.match(line):
            return f"{self.name}: warning: {match['message']}"
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                return None
            level = str(record.get("level", "")).upper()
            if isinstance(record, dict) and level in _SHOWN_LEVELS:
                return f"{self.name}: {level.lower()}: {record.get('event', '')}"
        return None


class Quiet:
    """Shows a condensed line once per `REPEAT_QUIET_S`: a sensor failing every tick is one line, not one
    every five seconds; the next showing says how many were held back."""

    def __init__(self, show: Callable[[str], None], now: Callable[[], float] = time.monotonic) -> None:
        self._show = show
        self._now = now
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            shown_at, held = self._last.get(line, (float("-inf"), 0))
            if self._now() - shown_at < REPEAT_QUIET_S:
                self._last[line] = (shown_at, held + 1)
                return
            self._last[line] = (self._now(), 0)
        self._show(f"{line} (and {held} more like it)" if held else line)


def pump(source: IO[bytes], log: IO[bytes], condenser: Condenser, show: Callable[[str], None]) -> None:
    """Copy `source` into `log` until it ends, showing what `condenser` makes of each line."""
    with log:
        for raw in iter(source.readline, b""):
            log.write(raw)
            condensed = condenser.feed(raw.decode(errors="replace"))
            if condensed is not None:
                show(condensed)
