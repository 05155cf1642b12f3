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
    """Reads `path` from where it stopped last time; `counts` holds every kind of error seen so far."""

    path: Path
    counts: Counter[str] = field(default_factory=Counter)
    lines: int = 0  # lines with a storage error (a line naming two kinds counts once)
    examples: list[str] = field(default_factory=list)
    _offset: int = 0

    def scan(self) -> Counter[str]:
        if not self.path.exists():
            return self.counts
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            kinds = set(STORAGE_ERROR.findall(line))
            if kinds:
                self.lines += 1
                self.counts.update(kinds)
                if len(self.examples) < 20:
                    self.examples.append(line[:500])
        return self.counts
