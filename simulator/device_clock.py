"""The simulated devices' clock: timestamps in the forms devices send, strictly increasing per key.

The database keys readings by device + metric + ts and events by event_id: two messages that collided
there would be stored as one and the end-to-end count would not add up, so every timestamp a device
sends is one step past the last one of its key when the clock has not moved on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def truncate_ms(ts: datetime) -> datetime:
    """`ts` to the millisecond, as devices send it."""
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def iso_ms_z(ts: datetime) -> str:
    """`2025-01-15T10:30:00.000Z`, the form the reference devices send."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class Stamps:
    """Strictly increasing timestamps per key: `now`, or one step past the last one handed out."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, ...], datetime] = {}

    def next(self, key: tuple[str, ...], now: datetime, step: timedelta) -> datetime:
        last = self._last.get(key)
        ts = now if last is None or now > last else last + step
        self._last[key] = ts
        return ts
