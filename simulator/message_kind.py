"""What the generators of the three device formats share: the random source, the clock and the QoS, a good
message (`good`) and one bad message per reject reason of the format (`bad_<reason>`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from simulator.device_clock import Stamps
from simulator.expected import REJECT_REASONS, ExpectedEvent, ExpectedReading, SentMessage


class MessageKind:
    """Common state of the per-format generators: the shared random source and the message QoS."""

    kind: str

    def __init__(self, rng: random.Random, stamps: Stamps, qos: int) -> None:
        self.rng = rng
        self.stamps = stamps
        self.qos = qos
        self._bad: dict[str, Callable[[datetime], SentMessage]] = {
            reason: getattr(self, f"bad_{reason}") for reason in REJECT_REASONS[self.kind]
        }

    def good(self, now: datetime) -> SentMessage:
        raise NotImplementedError

    def bad(self, reason: str, now: datetime) -> SentMessage:
        return self._bad[reason](now)

    def sent(
        self,
        topic: str,
        payload: bytes,
        *,
        readings: tuple[ExpectedReading, ...] = (),
        events: tuple[ExpectedEvent, ...] = (),
    ) -> SentMessage:
        return SentMessage(self.kind, topic, payload, self.qos, False, "", readings, events)

    def rejected(self, reason: str, topic: str, payload: bytes) -> SentMessage:
        return SentMessage(self.kind, topic, payload, self.qos, True, reason)
