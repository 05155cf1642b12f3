"""The benchmark's messages: plain-metric topics with a JSON payload that carries the publish time.

The payload's `ts` is the publish time (microseconds, UTC), so the product stores it as the
measurement's device time and the baselines as their `ts`; `value` is the message's global sequence
number, unique across publisher processes.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: Devices per publisher process; a device's messages are at least this many publishes apart, so two of
#: them never share a microsecond timestamp (the product's key is device + metric + ts).
DEVICES_PER_PUBLISHER = 50
METRIC = "temperature"


def topic(publisher: int, seq: int) -> str:
    return f"devices/bench-p{publisher}-d{seq % DEVICES_PER_PUBLISHER}/{METRIC}"


def payload(seq: int, published_at: float) -> bytes:
    ts = datetime.fromtimestamp(published_at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return b'{"value": %d, "ts": "%s"}' % (seq, ts.encode())
