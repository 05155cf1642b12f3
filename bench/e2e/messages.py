"""The benchmark's messages: the simulator's fleet (all three formats, 5 % bad) by default, or plain-metric
messages that every peer writer can store (`PLAIN`).

Plain: `devices/bench-p{publisher}-d{n}/temperature` with a JSON payload whose `ts` is the publish time
(microseconds, UTC), so the product stores it as the measurement's device time and the baselines as their
`ts`; `value` is the message's global sequence number, unique across publisher processes.

The fleet: each publisher process is a `simulator.messages.MessageFactory` of its own seed (its own plain
and event devices; the F2 controllers are the fleet's), whose devices' clock is the publish time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: Devices per publisher process; a device's messages are at least this many publishes apart, so two of
#: them never share a microsecond timestamp (the product's key is device + metric + ts).
DEVICES_PER_PUBLISHER = 50
METRIC = "temperature"
#: `--kinds` of the peer comparison: the plain messages above, which the baseline writers store.
PLAIN = ("plain",)
#: The simulator's default fleet.
MIX = ("plain", "event", "f2")
BAD_SHARE = 0.05

#: (sequence number, publish time) -> (topic, payload)
MessageSource = Callable[[int, float], tuple[str, bytes]]


def topic(publisher: int, seq: int) -> str:
    return f"devices/bench-p{publisher}-d{seq % DEVICES_PER_PUBLISHER}/{METRIC}"


def payload(seq: int, published_at: float) -> bytes:
    ts = datetime.fromtimestamp(published_at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return b'{"value": %d, "ts": "%s"}' % (seq, ts.encode())


def source(publisher: int, kinds: tuple[str, ...], bad_share: float) -> MessageSource:
    """Publisher process `publisher`'s messages: plain ones for `PLAIN`, else the simulator's fleet."""
    if kinds == PLAIN:
        return lambda seq, now: (topic(publisher, seq), payload(seq, now))
    from simulator.messages import MessageFactory

    factory = MessageFactory(publisher + 1, kinds=kinds, bad_share=bad_share)

    def fleet(_seq: int, now: float) -> tuple[str, bytes]:
        message = factory.next(datetime.fromtimestamp(now, UTC))
        return message.topic, message.payload

    return fleet
