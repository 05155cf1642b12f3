"""`iot-etl up`'s listeners: one, or IOT_LISTENER_REPLICAS replicas in one shared-subscription group.

The first is the listener of a single-listener `up` (`listener`: IOT_LISTENER_CLIENT_ID, so its session, and
what the broker queued there, carries over when the count goes from one to more); replica `i` >= 1 runs as
`listener-<i>` with IOT_LISTENER_REPLICA=i (its own client id and persistent session) and its /metrics on
IOT_LISTENER_METRICS_PORT + i. Mosquitto keeps handing a dead replica's session its turn of
the group's messages and gives none of them to the other replicas, so a replica that dies is started again
under its own name (its session then delivers what it held); one that dies within
`CRASH_LOOP_S` of its start is not (a replica that cannot run stops `up`, as any other child does).
"""

from __future__ import annotations

import sys
import time

from iot_core.settings import Settings
from iot_etl.children import Child

#: A replica that exits sooner than this after its start is failing, not dying: it is not started again.
CRASH_LOOP_S = 10.0


def replica_settings(settings: Settings) -> list[Settings]:
    """Each listener's settings: the settings themselves first, then replica 1..N-1, each with its own
    /metrics port (0 stays off)."""
    port = settings.listener_metrics_port
    return [settings] + [
        settings.model_copy(
            update={"listener_replica": str(i), "listener_metrics_port": port + i if port else 0}
        )
        for i in range(1, settings.listener_replicas)
    ]


def listener_children(settings: Settings) -> list[Child]:
    """The supervisor's listener children, each with the environment of its replica."""
    argv = [sys.executable, "-m", "ingest_listener"]
    replicas = settings.listener_replicas > 1
    return [Child("listener", argv, restart=replicas)] + [
        Child(
            f"listener-{s.listener_replica}",
            argv,
            env={
                "IOT_LISTENER_REPLICA": s.listener_replica,
                "IOT_LISTENER_METRICS_PORT": str(s.listener_metrics_port),
            },
            restart=True,
        )
        for s in replica_settings(settings)[1:]
    ]


def may_restart(child: Child, now: float | None = None) -> bool:
    """Whether a dead child is one to start again: a replica that ran at least CRASH_LOOP_S."""
    if not child.restart or child.started_at is None:
        return False
    return (time.monotonic() if now is None else now) - child.started_at >= CRASH_LOOP_S
