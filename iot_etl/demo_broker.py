"""The demo MQTT broker `iot-etl up` runs where no broker answers and no Mosquitto is installed: rumqttd,
compiled into the `iotcore` wheel, so that a machine with nothing but Python gets a whole pipeline.

It speaks MQTT 5 only on its port (every client of the project does; `mosquitto_pub` needs `-V 5`), QoS 0-2,
persistent sessions while it runs. It is a demo: its sessions and queued messages live in memory and are
lost when it stops, it lets anyone connect and publish or subscribe to anything (no ACLs, no TLS), and a
subscriber that is away for long loses the oldest messages once its topics' in-memory log is full
(`SEGMENT_BYTES` * `SEGMENTS`). Run as `python -m iot_etl.demo_broker CONFIG`; the supervisor stops it with
SIGTERM.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

SEGMENT_BYTES = 32 * 1024 * 1024
SEGMENTS = 8
# unacknowledged QoS 1/2 messages the broker has out to one client (as IOT_LISTENER_RECEIVE_MAXIMUM)
MAX_INFLIGHT = 1000
# larger payloads reach the pipeline, which rejects them with a reason (`payload_too_large`)
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024


def render_config(host: str, port: int) -> str:
    """rumqttd's configuration: one MQTT 5 listener on host:port."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"""id = 0

[router]
id = 0
max_connections = 10010
max_outgoing_packet_count = 200
max_segment_size = {SEGMENT_BYTES}
max_segment_count = {SEGMENTS}

[v5.1]
name = "demo"
listen = "{address}"
next_connection_delay_ms = 1

[v5.1.connections]
connection_timeout_ms = 60000
max_payload_size = {MAX_PAYLOAD_BYTES}
max_inflight_count = {MAX_INFLIGHT}
"""


def write_config(workdir: Path, host: str, port: int) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "rumqttd.toml"
    path.write_text(render_config(host, port), encoding="utf-8")
    return path


def main(argv: list[str]) -> None:
    from iotcore.iotcore import IotCoreBroker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # rumqttd reports every routed packet inside an error-level span: its records say nothing is wrong
    logging.getLogger("rumqttd").setLevel(logging.CRITICAL)
    IotCoreBroker(config_path=argv[0]).run_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
