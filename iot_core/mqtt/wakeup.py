"""Many packets from one thread, one wake-up of paho's network thread.

paho queues each packet another thread sends (the listener's PUBACK per written entry, a publisher's
PUBLISH) and writes a byte to a socket pair that paho's network thread selects on, so that it wakes and
writes the packet. A batch of 500 acknowledgements from the listener's writer thread is 500 such writes:
each one a system call that lets go of the GIL, and mostly a wake-up of the network thread that takes the
GIL, writes a few packets and selects again. Measured on a backlog drain that is a quarter of the
listener's CPU.

`one_wakeup(client)` sends the packets queued inside it with a single wake-up at its end. Meanwhile the
socket pair's writing end is swapped for one that does nothing: packets queued by any thread in that time
are written by the network thread on its next turn (it selects for writing whenever packets wait) or,
at the latest, after the wake-up at the end. This uses paho's private `_sockpairW` (paho 2.x): without it,
every packet wakes the network thread as paho does by itself, only slower. The swap must be done from one
thread at a time (the writer's); paho itself assigns the attribute only in `loop_start` and `loop`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import paho.mqtt.client as mqtt

#: The attribute of paho's client that holds the writing end of its wake-up socket pair.
WAKE_ATTRIBUTE = "_sockpairW"


class _NoWake:
    """Stands in for the wake-up socket: paho's `send(b"0")` on it does nothing (and returns 1, as the
    socket's would; `len` is a call into C, cheaper than a method of ours)."""

    send = staticmethod(len)


NO_WAKE = _NoWake()


@contextlib.contextmanager
def one_wakeup(client: mqtt.Client) -> Iterator[None]:
    """Packets queued inside wake paho's network thread once, at the end."""
    wake = getattr(client, WAKE_ATTRIBUTE, None)
    if wake is None or wake is NO_WAKE:  # no network thread, or another paho: every packet wakes it
        yield
        return
    setattr(client, WAKE_ATTRIBUTE, NO_WAKE)
    try:
        yield
    finally:
        setattr(client, WAKE_ATTRIBUTE, wake)
        with contextlib.suppress(OSError):  # BlockingIOError: the pair is full, the thread wakes anyway
            wake.send(b"0")
