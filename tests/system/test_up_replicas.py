"""`iot-etl up` with IOT_LISTENER_REPLICAS=2: two listeners in one shared-subscription group, and a replica
that is SIGKILLed is started again under its own name, so the messages its session held arrive."""

from __future__ import annotations

import os
import re
import signal
import time
import uuid

import pytest
import redis

from iot_etl.launch import launch_up
from iot_etl.listener_replicas import CRASH_LOOP_S
from tests.support.up import publish, stop_up
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow]


def stream_payloads(env: dict[str, str]) -> list[str]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        return [f[b"payload"].decode() for _id, f in client.xrange(env["IOT_STREAM_PREFIX"])]
    finally:
        client.close()


def test_up_runs_two_replicas_and_starts_a_killed_one_again(up_env: dict[str, str]) -> None:
    env = {
        **up_env,
        "IOT_LISTENER_REPLICAS": "2",
        "IOT_LISTENER_GROUP": f"g{uuid.uuid4().hex[:8]}",
        "IOT_LISTENER_SESSION_EXPIRY_S": "120",  # the system broker forgets the test's sessions soon after
        "IOT_DEVICE_MAX_MSGS_PER_S": "0",
    }
    lines: list[str] = []
    up, banner = launch_up(env, "--no-simulator", timeout_s=300, on_line=lines.append)
    try:
        pids = dict(re.findall(r"^started (listener(?:-\d)?) \(pid (\d+)\)$", banner, re.M))
        assert pids.keys() == {"listener", "listener-1"}, banner
        assert "2 listener replicas' subscriptions" in banner, banner  # made before anything publishes
        device = f"rep{uuid.uuid4().hex[:6]}"
        first = [(f"devices/{device}/seq", f"a{i}") for i in range(200)]
        publish(1883, first)
        time.sleep(CRASH_LOOP_S)  # a replica that dies sooner after its start is a failing one
        os.killpg(int(pids["listener-1"]), signal.SIGKILL)
        second = [(f"devices/{device}/seq", f"b{i}") for i in range(200)]
        publish(1883, second)
        assert wait_until(
            lambda: any("listener-1 exited with -9; starting it again" in x for x in lines), 30
        ), lines
        assert wait_until(lambda: any(x.startswith("started listener-1 (pid ") for x in lines), 30), lines
        expected = {p for _t, p in first + second}
        assert wait_until(lambda: expected <= set(stream_payloads(env)), 60), "a message is missing"
        assert up.poll() is None, lines
    finally:
        code = stop_up(up)
    assert code == 0, lines
