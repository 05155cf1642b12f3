"""Listener replicas as processes in one shared-subscription group (IOT_LISTENER_GROUP), each with its own
replica name (IOT_LISTENER_REPLICA: client id and persistent session), against a private Mosquitto with the
product's configuration and the local Redis.

What Mosquitto 2 does with a member that dies (measured by bench/shared_subscription.py, docs/scaling.md):
it redelivers none of the dead member's messages to the other member; its session holds what was in flight
and keeps taking the member's turns, until the same client id returns (then all of it arrives, the in-flight
ones flagged `dup`) or the session expires (then it is gone). So a replica that dies must come back under its
own replica name before IOT_LISTENER_SESSION_EXPIRY_S."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PrivateMosquitto
from tests.support.replicas import Burst, ListenerProcess, delete_streams, stream_copies
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services


@pytest.fixture
def rep_prefix() -> Iterator[str]:
    value = f"iotrep_{uuid.uuid4().hex[:12]}"
    yield value
    delete_streams(value)


def cpu_burners(n: int) -> list[subprocess.Popen[bytes]]:
    """`n` processes that keep a core busy for at most five minutes each."""
    loop = "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(n)]


def replicas(broker: PrivateMosquitto, prefix: str, workdir: Path, **settings: str) -> list[ListenerProcess]:
    group = f"g{uuid.uuid4().hex[:6]}"
    return [
        ListenerProcess(broker, prefix, replica=str(i), group=group, workdir=workdir, **settings)
        for i in range(2)
    ]


@pytest.mark.parametrize(
    "load", [pytest.param(0, id="idle"), pytest.param(2, id="cpu-loaded", marks=pytest.mark.slow)]
)
def test_a_replica_killed_mid_burst_loses_nothing_once_it_returns_under_its_name(
    rep_prefix: str, tmp_path: Path, load: int
) -> None:
    burners = cpu_burners(load)
    try:
        with PrivateMosquitto() as broker:
            pair = replicas(broker, rep_prefix, tmp_path)
            for replica in pair:
                replica.start()
            try:
                burst = Burst(broker, count=4000)
                burst.run(when=(1200, pair[1].kill))
                assert not burst.refused and len(burst.acked) == burst.count
                assert pair[1].process is not None and pair[1].process.returncode == -9
                held = burst.acked - stream_copies(rep_prefix).keys()
                assert held, "the dead replica's session held nothing: the kill came too late to test"
                pair[1].start()  # what a supervisor does: the same replica name
                assert wait_until(lambda: burst.acked <= stream_copies(rep_prefix).keys(), 120), (
                    "acknowledged messages missing after the replica returned"
                )
                assert [r.stop() for r in pair] == [0, 0]  # each wrote what it had, then nothing more
                copies = stream_copies(rep_prefix)
                assert copies.keys() == burst.acked, "every acknowledged message, nothing else"
                # a second copy exists only of a message the broker sent again (written, not yet
                # acknowledged at the kill): such a copy carries `dup`, and a message has one first copy
                assert all(flags.count(False) <= 1 for flags in copies.values()), [
                    (p, f) for p, f in copies.items() if f.count(False) > 1
                ]
                # whether any message was written and not yet acknowledged at the kill (then sent again,
                # flagged `dup`) depends on where the kill lands; under load it may land where none was
            finally:
                for replica in pair:
                    replica.kill()
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(10)


@pytest.mark.slow
def test_a_replica_that_stays_away_past_its_session_expiry_loses_its_held_share(
    rep_prefix: str, tmp_path: Path
) -> None:
    """The limit of the design: Mosquitto drops an expired session with everything it held, and does not
    hand it to the other member. (The default expiry is 7 days; here 2 s.)"""
    with PrivateMosquitto() as broker:
        pair = replicas(broker, rep_prefix, tmp_path, listener_session_expiry_s="2")
        for replica in pair:
            replica.start()
        try:
            burst = Burst(broker, count=1000)
            burst.run(when=(300, pair[1].kill))
            assert burst.acked - stream_copies(rep_prefix).keys()
            time.sleep(2 + 3)  # past the expiry; Mosquitto checks sessions' expiry every second
            after = Burst(broker, count=200, tag="n")
            after.run()
            assert wait_until(lambda: after.acked <= stream_copies(rep_prefix).keys(), 60), (
                "after the expiry the group hands everything to the replica that is left"
            )
            # replica 0 wrote its share of the first burst before the second: the rest was replica 1's
            held = burst.acked - stream_copies(rep_prefix).keys()
            assert held
            pair[1].start()
            assert "session present: False" in pair[1].log_path.read_text()
            assert [r.stop() for r in pair] == [0, 0]
            assert held - stream_copies(rep_prefix).keys() == held, "the expired session's messages are gone"
        finally:
            for replica in pair:
                replica.kill()


def test_a_replica_retired_with_session_expiry_0_hands_over_what_it_held(
    rep_prefix: str, tmp_path: Path
) -> None:
    """Removing a replica for good: started once more under its name with IOT_LISTENER_SESSION_EXPIRY_S=0,
    it receives what its session held, and its clean stop ends the session, so the group no longer gives
    it turns."""
    with PrivateMosquitto() as broker:
        pair = replicas(broker, rep_prefix, tmp_path)
        for replica in pair:
            replica.start()
        try:
            burst = Burst(broker, count=600)
            burst.run(when=(200, pair[1].kill))
            assert burst.acked - stream_copies(rep_prefix).keys()
            pair[1].env["IOT_LISTENER_SESSION_EXPIRY_S"] = "0"
            pair[1].start()
            assert wait_until(lambda: burst.acked <= stream_copies(rep_prefix).keys(), 60)
            assert pair[1].stop() == 0
            after = Burst(broker, count=200, tag="n")
            after.run()
            assert wait_until(lambda: after.acked <= stream_copies(rep_prefix).keys(), 60), (
                "the retired replica still took turns"
            )
            assert pair[0].stop() == 0
        finally:
            for replica in pair:
                replica.kill()
