"""Per-device limits of the listener: token buckets and the once-a-minute report. Pure (no I/O, no clock of
its own: every call takes `now`, a `time.monotonic()` value).

Mosquitto 2.0 limits neither message rates nor topic lengths per client, so one device (or anyone with
the broker's address and no device certificate) could fill the streams. The listener checks each message
before buffering it; what is refused is acknowledged to the broker but not written (see `Listener`).

- A device is a topic's device segment (`iot_core.formats.topics.topic_device`: `devices/ID/...`,
  `qs/v1/ID/events`, `stat|tele/ID/...`). Topics without one (`devices`, `stat//x`, topics of other
  formats) share one bucket, the key `NO_DEVICE`. F2 ids are not lowercased: on the device listener the
  broker's ACL allows a device exactly its own id, so case variants are not another identity's budget.
- Each device has two buckets, messages and payload bytes, each holding `burst_s` (10) seconds of its
  rate. They are kept as GCRA "theoretical arrival times": a bucket is one float, the instant at which it
  is full again, so a device costs a key and two floats, and a bucket whose instant has passed is full.
- A refused message takes nothing from either bucket.
- The map of devices is an LRU bounded by `max_devices`: the least recently seen device is dropped first.
  A device whose buckets are full again loses nothing by being dropped (a new entry starts full); only an
  attacker who keeps more than `max_devices` ids busy at once can make the listener forget a device's
  debt, which gives that device at most one more burst.
- Each listener process limits what it receives: with N listeners sharing a subscription, a device's
  messages are spread over them and it may send up to N times the limits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from iot_core.formats.topics import topic_device

#: Topics longer than this (UTF-8 bytes) are not written; Mosquitto accepts up to 65,535.
MAX_TOPIC_BYTES = 1024
#: Seconds of its rate a bucket holds: the burst is 10x the per-second limit.
BURST_S = 10.0
#: Devices whose buckets are remembered at once (measured: 320 bytes each with 63-character ids).
MAX_DEVICES = 20_000
#: The key under which topics without a device segment are limited together.
NO_DEVICE = ""
#: Device keys are cut to this many characters (valid device ids have at most 63), which bounds the
#: memory an attacker's long ids take; ids sharing such a prefix share a bucket.
MAX_DEVICE_KEY = 64

RATE = "rate"
BYTES = "bytes"
TOPIC_TOO_LONG = "topic_too_long"
REASONS = (RATE, BYTES, TOPIC_TOO_LONG)

_SLACK_S = 1e-9  # a bucket emptied by exactly its capacity in float steps still counts as within it


class DeviceLimiter:
    """Token buckets per device: `check(device, size, now)` says whether one more message fits.

    `msgs_per_s` / `bytes_per_s` of 0 turn that limit off (`enabled` is False when both are off).
    """

    def __init__(
        self,
        msgs_per_s: float,
        bytes_per_s: float,
        *,
        burst_s: float = BURST_S,
        max_devices: int = MAX_DEVICES,
    ) -> None:
        if msgs_per_s < 0 or bytes_per_s < 0 or burst_s <= 0 or max_devices < 1:
            raise ValueError("rates must be >= 0, burst_s > 0 and max_devices >= 1")
        self.msgs_per_s = msgs_per_s
        self.bytes_per_s = bytes_per_s
        self.burst_s = burst_s
        self.max_devices = max_devices
        self._msg_cost = 1.0 / msgs_per_s if msgs_per_s else 0.0
        self._byte_cost = 1.0 / bytes_per_s if bytes_per_s else 0.0
        self._limit = burst_s + _SLACK_S
        # device -> [instant its message bucket is full, instant its byte bucket is full]
        self._devices: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self._msg_cost or self._byte_cost)

    def __len__(self) -> int:
        """Devices remembered now (bounded by `max_devices`)."""
        return len(self._devices)

    def check(self, device: str, size: int, now: float) -> str | None:
        """Take one message of `size` payload bytes from the device's buckets: None if it fits, else the
        reason it does not (`RATE` or `BYTES`; then nothing is taken)."""
        devices = self._devices
        state = devices.get(device)
        if state is None:
            if len(devices) >= self.max_devices:
                devices.popitem(last=False)
            state = devices[device] = [now, now]
        else:
            devices.move_to_end(device)
        msgs_full = (state[0] if state[0] > now else now) + self._msg_cost
        if msgs_full - now > self._limit:
            return RATE
        bytes_full = (state[1] if state[1] > now else now) + size * self._byte_cost
        if bytes_full - now > self._limit:
            return BYTES
        state[0] = msgs_full
        state[1] = bytes_full
        return None


def device_key(topic: str) -> str:
    """The key a topic's message is limited under: its device segment, cut to `MAX_DEVICE_KEY`."""
    return topic_device(topic)[:MAX_DEVICE_KEY]


def device_label(device: str, width: int = 64) -> str:
    """A device key as a log line shows it: printable, at most `width` characters (ids come from topics,
    which may hold anything but `+`, `#` and NUL, including line breaks)."""
    if device == NO_DEVICE:
        return "(topics without a device segment)"
    text = device if device.isprintable() else ascii(device)[1:-1]
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(slots=True)
class _Window:
    opened: float
    counts: dict[str, int] = field(default_factory=dict)


class LimitLog:
    """What to log about limited messages: per device at most one line a minute, and bounded.

    `record()` counts a limited message; a device's first one opens its window, and `due(now)` returns
    the lines of the windows that are `interval_s` old (`flush()` returns all, e.g. at stop). While
    `max_devices` windows are open, further devices are summed into one line for all of them (which
    counts up to 10 x `max_devices` of them).
    `limits` names each reason's setting as the line shows it, e.g. `{"rate":
    "IOT_DEVICE_MAX_MSGS_PER_S=100"}`.
    """

    def __init__(self, limits: dict[str, str], *, interval_s: float = 60.0, max_devices: int = 1000) -> None:
        self.limits = limits
        self.interval_s = interval_s
        self.max_devices = max_devices
        self._windows: dict[str, _Window] = {}
        self._others: _Window | None = None  # devices beyond max_devices, summed
        self._other_devices: set[str] = set()  # which, up to 10 x max_devices of them

    def record(self, device: str, reason: str, now: float) -> None:
        """Count one limited message of `device`."""
        window = self._windows.get(device)
        if window is None:
            if len(self._windows) < self.max_devices:
                window = self._windows[device] = _Window(now)
            else:
                if self._others is None:
                    self._others = _Window(now)
                window = self._others
                if len(self._other_devices) < 10 * self.max_devices:
                    self._other_devices.add(device)
        window.counts[reason] = window.counts.get(reason, 0) + 1

    def due(self, now: float) -> list[str]:
        """Lines of the windows open for `interval_s` or longer (those windows close)."""
        return self._take(lambda window: now - window.opened >= self.interval_s)

    def flush(self) -> list[str]:
        """Lines of every open window (they all close)."""
        return self._take(lambda _window: True)

    def _take(self, ripe: Callable[[_Window], bool]) -> list[str]:
        lines = []
        for device in [d for d, w in self._windows.items() if ripe(w)]:
            said = self._said(self._windows.pop(device))
            lines.append(f"device {device_label(device)} over its limit: {said}")
        if self._others is not None and ripe(self._others):
            n = len(self._other_devices)
            more = f"{n}+" if n >= 10 * self.max_devices else str(n)
            lines.append(f"{more} more devices over their limits: {self._said(self._others)}")
            self._others, self._other_devices = None, set()
        return lines

    def _said(self, window: _Window) -> str:
        total = sum(window.counts.values())
        if len(window.counts) == 1:
            (reason,) = window.counts
            why = self.limits.get(reason, reason)
        else:
            why = "; ".join(f"{self.limits.get(r, r)}: {n}" for r, n in sorted(window.counts.items()))
        return f"{total} messages not written in the last minute ({why})"
