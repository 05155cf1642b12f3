"""Listener replicas keep the listener's security: on the product's TLS broker each replica connects to the
service listener with the listener's certificate under its own client id, subscribes behind the group, and
the service ACL (read on the device topics) lets the group's messages through; together they write each
message of a certified device once."""

from __future__ import annotations

import uuid

import pytest

from ingest_listener import Listener
from iot_core.settings import Settings
from tests.support.listener import entries
from tests.support.secure_broker import SecureMosquitto
from tests.support.waiting import wait_until

pytestmark = pytest.mark.services

DEVICE = "sensor-rep"
SYSTEM_REDIS = "redis://127.0.0.1:6379/0"


def test_replicas_share_the_group_over_mtls_with_the_listener_certificate(prefix: str) -> None:
    with SecureMosquitto(devices=[DEVICE]) as broker:
        group, client_id = f"g{uuid.uuid4().hex[:8]}", f"iotrep-{uuid.uuid4().hex[:6]}"
        replicas = [
            Listener(
                Settings(
                    **{
                        **broker.settings().model_dump(),
                        "security": True,
                        "redis_url": SYSTEM_REDIS,
                        "stream_prefix": prefix,
                        "listener_client_id": client_id,
                        "listener_metrics_port": 0,
                        "listener_group": group,
                        "listener_replica": str(i),
                    }
                )
            )
            for i in range(2)
        ]
        for listener in replicas:
            listener.start()
        device = broker.client(broker.device_tls(DEVICE), broker.port)
        try:
            assert all(listener.wait_ready(20) for listener in replicas)
            assert all(listener.tls is not None for listener in replicas)
            assert device.wait_connected()
            reasons = [device.publish(f"devices/{DEVICE}/seq", str(i)) for i in range(60)]
            assert reasons == [0] * 60
            settings = replicas[0].settings
            assert wait_until(lambda: len(entries(settings)) >= 60, 30), entries(settings)
            assert sorted(int(e[b"payload"]) for e in entries(settings)) == list(range(60))
            shares = [listener.metrics.value("iot_listener_entries_written_total") for listener in replicas]
            assert all(share > 0 for share in shares), shares
            log = broker.log_text()
            for i in range(2):  # each replica under its own client id, as the listener's user
                assert f"as {client_id}-{i} (p5, c0, k30, u'iot-etl-listener')" in log, log[-2000:]
        finally:
            device.close()
            for listener in replicas:
                listener.stop()
