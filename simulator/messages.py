"""Pure generation of simulated device messages in the three formats, each with its expected outcome.

No I/O and no clock of its own: the caller passes `now`, so a seed and a sequence of times give the same
messages every time (tests), while a real run passes the wall clock. Device timestamps and event ids are
strictly increasing per key (`simulator.device_clock`). The formats' generators: `simulator.plain_devices`,
`simulator.event_devices`, `simulator.f2_devices`.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, tzinfo

from simulator.device_clock import Stamps
from simulator.event_devices import EventDevices
from simulator.expected import KINDS, REJECT_REASONS, SentMessage
from simulator.f2_devices import F2Fleet
from simulator.fleet import F2_CONTROLLERS
from simulator.message_kind import MessageKind
from simulator.plain_devices import PlainDevices


class MessageFactory:
    """A seeded fleet: each `next(now)` is one message of a random kind, bad with probability `bad_share`."""

    def __init__(
        self,
        seed: int,
        *,
        devices: int = 8,
        kinds: tuple[str, ...] = KINDS,
        bad_share: float = 0.05,
        qos: int = 1,
        naive_tz: tzinfo = UTC,
    ) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise ValueError(
                f"kinds must be a non-empty selection of {','.join(KINDS)}, got {','.join(kinds)!r}"
            )
        if not 0.0 <= bad_share <= 1.0:
            raise ValueError(f"bad_share must be between 0 and 1, got {bad_share}")
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.rng = random.Random(seed)
        self.kinds = tuple(kinds)
        self.bad_share = bad_share
        stamps = Stamps()
        self.plain = PlainDevices(self.rng, stamps, qos, devices)
        self.event = EventDevices(self.rng, stamps, qos, devices, naive_tz)
        self.f2 = F2Fleet(self.rng, stamps, qos, naive_tz)
        self._generators: dict[str, MessageKind] = {"plain": self.plain, "event": self.event, "f2": self.f2}

    @property
    def device_ids(self) -> tuple[str, ...]:
        """Every device of the fleet that sends the chosen kinds (F2: the controllers). Deliberately bad
        messages may name devices outside it (an unknown F2 controller)."""
        ids = {
            "plain": self.plain.device_ids,
            "event": self.event.device_ids,
            "f2": tuple(c.device_key for c in F2_CONTROLLERS),
        }
        return tuple(device for kind in self.kinds for device in ids[kind])

    def next(self, now: datetime) -> SentMessage:
        """The next message; `now` (UTC-aware) is the devices' clock."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        now = now.astimezone(UTC)
        generator = self._generators[self.rng.choice(self.kinds)]
        if self.rng.random() < self.bad_share:
            return generator.bad(self.rng.choice(tuple(REJECT_REASONS[generator.kind])), now)
        return generator.good(now)
