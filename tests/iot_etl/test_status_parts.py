"""`iot-etl status` asks every part at once and says which it is still waiting for; the broker's dropped
counter says what it covers (the whole broker, not this pipeline alone)."""

from __future__ import annotations

import itertools

import pytest

from iot_core.settings import Settings
from iot_etl.status import DROPPED_COVERS, DROPPED_TOPIC, collect, parts
from tests.support import PrivateMosquitto

pytestmark = pytest.mark.services


def test_status_says_what_it_waits_for_until_every_part_has_answered(
    clean_db: str, settings: Settings
) -> None:
    with PrivateMosquitto() as broker:
        dropped = broker.sys_value(DROPPED_TOPIC)  # published once: status reads the retained value
        here = settings.model_copy(update={"mqtt_host": broker.host, "mqtt_port": broker.port})
        heard: list[list[str]] = []
        lines = collect(here, heard.append)
    names = [what for what, _ in parts(here)]
    assert heard[0] == names and heard[-1] == []
    for earlier, later in itertools.pairwise(heard):
        assert set(later) < set(earlier), "each change is a part that answered"
    # the answers in the parts' order, whichever answered first
    order = ["database", "redis", "dagster", "broker", "listener"]
    shown = list(dict.fromkeys(line.part for line in lines))
    assert [part for part in shown if part in order] == order
    value = next(line.value for line in lines if line.item == "messages dropped")
    assert value == f"{dropped} {DROPPED_COVERS}"
    assert "all its clients" in value
