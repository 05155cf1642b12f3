"""What every baseline writer shares: its table, message parsing, and the subscribing main loop.

The writers are deliberately the designs a user would write in an afternoon: paho acknowledges each
QoS 1 message when it arrives (not when it is stored), and rows are parsed in Python one by one.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
import psycopg

TABLE = "bench_readings"
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    device text NOT NULL,
    metric text NOT NULL,
    ts     timestamptz NOT NULL,
    value  double precision
)"""
TOPIC_FILTER = "devices/+/+"

Row = tuple[str, str, datetime, float]


def parse(topic: str, payload: bytes) -> Row:
    _, device, metric = topic.split("/", 2)
    doc = json.loads(payload)
    return device, metric, datetime.fromisoformat(doc["ts"]), float(doc["value"])


def create_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("url", help="PostgreSQL URL of the database to write into")
    return parser.parse_args()


def subscribe_until_stopped(host: str, port: int, client_id: str, on_row: Callable[[Row], None]) -> None:
    """Subscribe (QoS 1), hand each parsed message to `on_row`, print `ready` once subscribed, and return
    on SIGTERM or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(TOPIC_FILTER, qos=1)

    def on_subscribe(*_: Any) -> None:
        print("ready", flush=True)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        on_row(parse(message.topic, message.payload))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
