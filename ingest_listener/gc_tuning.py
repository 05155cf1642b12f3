"""The listener process's garbage collector settings.

The listener keeps each message's entry (an `Entry` and its fields dict, both tracked by the collector)
until Redis has taken it, hundreds of messages later. With CPython's default threshold (a young-generation
collection every 700 net allocations) almost every entry lives through several collections and is moved on
to the oldest generation, whose growth then triggers full collections, each of which walks every object
the process holds (about 250,000 after its imports). On a backlog drain of the simulator's mix that was
4-6 µs of collector time per message, against about 1 µs with the threshold below.

`tune_gc()` raises the young generation's threshold, so that entries are mostly written and freed before a
collection sees them, and freezes what exists at start (modules, settings, clients): full collections no
longer walk it. Objects are still freed by reference counting at once; only cyclic garbage waits longer.
"""

from __future__ import annotations

import gc

#: Net allocations of tracked objects between two young-generation collections (CPython's default: 700).
GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """For a process that runs a listener: call once, after the listener is built."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
