"""`iot-etl up`'s listener replicas: their names, settings and /metrics ports, and which dead one is started
again."""

from __future__ import annotations

import pytest

from iot_core.settings import Settings
from iot_etl.children import Child
from iot_etl.listener_replicas import CRASH_LOOP_S, listener_children, may_restart, replica_settings


def test_only_a_replica_that_ran_long_enough_is_started_again() -> None:
    """A replica that exits at once (a setting it refuses, a port taken) is failing: `up` stops instead of
    starting it in a loop; other children are never started again."""
    children = listener_children(
        Settings(listener_replicas=3, listener_group="g", listener_metrics_port=9200)
    )
    assert [(c.name, c.env, c.restart) for c in children] == [("listener", {}, True)] + [
        (f"listener-{i}", {"IOT_LISTENER_REPLICA": str(i), "IOT_LISTENER_METRICS_PORT": str(9200 + i)}, True)
        for i in range(1, 3)
    ]
    replica = children[0]
    replica.started_at = 100.0
    assert not may_restart(replica, now=100.0 + CRASH_LOOP_S - 1)
    assert may_restart(replica, now=100.0 + CRASH_LOOP_S)
    assert not may_restart(Child("dagster-daemon", ["x"], started_at=0.0), now=1e9)
    assert [(c.name, c.restart) for c in listener_children(Settings())] == [("listener", False)]


def test_each_replica_has_its_client_id_filters_and_metrics_port() -> None:
    settings = Settings(listener_replicas=2, listener_group="grp", listener_metrics_port=0)
    replicas = replica_settings(settings)
    # the first keeps the single listener's client id: its session carries over from one listener to more
    assert [s.listener_session_id for s in replicas] == ["iot-etl-listener", "iot-etl-listener-1"]
    assert all(s.listener_metrics_port == 0 for s in replicas)
    assert replicas[1].listener_filters == [
        "$share/grp/devices/#",
        "$share/grp/qs/v1/+/events",
        "$share/grp/stat/#",
        "$share/grp/tele/#",
    ]
    one = Settings()
    assert replica_settings(one) == [one] and one.listener_filters == one.listener_topics
    assert one.listener_session_id == "iot-etl-listener"


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"listener_replicas": 2}, "needs IOT_LISTENER_GROUP"),
        ({"listener_group": "g", "listener_topics": "$share/g/devices/#"}, "give the plain filters"),
        ({"listener_group": "a/b"}, "listener_group"),
        ({"listener_group": "#"}, "listener_group"),
        ({"listener_replica": "x y"}, "listener_replica"),
    ],
)
def test_settings_that_would_lose_or_double_messages_are_refused(
    values: dict[str, object], refusal: str
) -> None:
    with pytest.raises(ValueError, match=refusal):
        Settings(**values)  # type: ignore[arg-type]
