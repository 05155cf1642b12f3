"""Storage errors in the stack's log: counted as the log grows, one count per line and kind."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

#: Lines that tell of a storage error (Dagster's SQLite or PostgreSQL storage, the telemetry database).
STORAGE_ERROR = re.compile(
    r"database is locked|disk I/O error|OperationalError|DatabaseError|InterfaceError|IntegrityError"
    r"|deadlock detected|could not serialize access|too many clients|server closed the connection"
)


@dataclass
class LogScanner:
    """Reads each log from where it stopped last time; `counts` holds every kind of error seen so far.

    `paths` are files, or folders whose `*.log` files are read (`iot-etl up` writes one log per process
    into its logs folder, and only a condensed line of each warning onto its own output)."""

    paths: tuple[Path, ...]
    counts: Counter[str] = field(default_factory=Counter)
    lines: int = 0  # lines with a storage error (a line naming two kinds counts once)
    examples: list[str] = field(default_factory=list)
    _offsets: dict[Path, int] = field(default_factory=dict)

    def scan(self) -> Counter[str]:
        for path in self.paths:
            for log in sorted(path.glob("*.log")) if path.is_dir() else [path]:
                self._scan_file(log)
        return self.counts

    def _scan_file(self, path: Path) -> None:
        if not path.exists():
            return
        offset = self._offsets.get(path, 0)
        if path.stat().st_size < offset:  # rotated: a new log of the same name
            offset = 0
        with path.open("rb") as log:
            log.seek(offset)
            data = log.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offsets[path] = offset + end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            kinds = set(STORAGE_ERROR.findall(line))
            if kinds:
                self.lines += 1
                self.counts.update(kinds)
                if len(self.examples) < 20:
                    self.examples.append(line[:500])
