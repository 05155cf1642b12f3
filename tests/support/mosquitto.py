"""`PrivateMosquitto`: a real Mosquitto broker of a test's own, configured like the product's broker.

Why not the system broker: tests that count losses, restart the broker or throw its sessions away
must not disturb (or be disturbed by) anything else, and the system broker's configuration (default
`max_queued_messages 1000`) is exactly what the product's generated configuration fixes.

Usage::

    with PrivateMosquitto() as broker:           # free port, temp dir, persistence on
        settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port, ...)
        ...
        broker.restart()                          # clean stop (saves sessions) + start, same port
        broker.restart(keep_sessions=False)       # a broker that lost every session and queue
        broker.kill()                             # crash (SIGKILL); broker.start() brings it back

The configuration comes from `iot_etl.broker_config.render_broker_config` (`autosave` overrides its
snapshot rule); `extra_config` lines are appended. The broker's log is at `broker.log_path`
(`broker.log_text()`), kept across restarts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as mqtt

from iot_etl.broker_config import AUTOSAVE, Autosave, render_broker_config
from tests.support.private_server import ProcessServer

DEFAULT_MAX_QUEUED_BYTES = 256 * 1024 * 1024


class PrivateMosquitto(ProcessServer):
    """A `mosquitto -c <generated config>` process on a free port in a temporary directory."""

    name = "mosquitto"

    def __init__(
        self,
        *,
        persistence: bool = True,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_config: str = "",
        binary: str = "mosquitto",
        autosave: Autosave = AUTOSAVE,
    ) -> None:
        super().__init__(host=host, port=port, log_name="mosquitto.log")
        self.persistence = persistence
        self.max_queued_bytes = max_queued_bytes
        self.extra_config = extra_config
        self.binary = binary
        self.autosave = autosave
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir()
        self.config_path = self.workdir / "mosquitto.conf"

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> PrivateMosquitto:
        """Write the configuration, start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        self.config_path.write_text(self._config())
        self._spawn([self.binary, "-c", str(self.config_path)], timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Clean stop (SIGTERM): Mosquitto saves sessions and queues to disk when persistence is on."""
        process = self._take_process()
        if process is not None:
            self._terminate(process, timeout)

    def restart(self, *, keep_sessions: bool = True) -> None:
        """Stop cleanly and start again on the same port.

        `keep_sessions=False` deletes the persistence file in between: the broker comes back without
        any session, subscription or queued message, as if it had run without persistence.
        """
        self.stop()
        if not keep_sessions:
            self.wipe_sessions()
        self.start()

    def wipe_sessions(self) -> None:
        """Delete the persistence database (only while stopped)."""
        if self.running:
            raise RuntimeError("wipe_sessions() needs a stopped broker")
        for path in self.data_dir.iterdir():
            path.unlink()

    # --- inspection --------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """`IOT_*` variables pointing a subprocess's `Settings` at this broker."""
        return {"IOT_MQTT_HOST": self.host, "IOT_MQTT_PORT": str(self.port)}

    def sys_value(self, topic: str, *, fresh: bool = False, timeout: float = 15.0) -> str:
        """The value of a `$SYS` topic, e.g. `$SYS/broker/publish/messages/dropped`.

        `$SYS` topics are retained and refreshed every `sys_interval` seconds (5 in the generated
        configuration). By default the retained value is returned, which can be up to that old;
        `fresh=True` waits for the next refresh instead. Counters restart with the broker.
        """
        latest: list[str] = []
        have_value = threading.Event()
        refreshed = threading.Event()  # a live (non-retained) $SYS cycle happened after we subscribed

        def on_connect(client: mqtt.Client, *_: object) -> None:
            client.subscribe([(topic, 0), ("$SYS/broker/uptime", 0)])

        def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
            if message.topic == topic:
                latest.append(message.payload.decode())
                have_value.set()
            if message.topic == "$SYS/broker/uptime" and not message.retain:
                refreshed.set()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.on_connect = on_connect
        client.on_message = on_message
        client.connect(self.host, self.port)
        client.loop_start()
        try:
            # only changed values are re-published, so "fresh" = the retained value after a new cycle
            if fresh and not refreshed.wait(timeout):
                raise TimeoutError(f"no $SYS refresh within {timeout} s")
            if not have_value.wait(timeout):
                raise TimeoutError(f"no value on {topic} within {timeout} s")
            if fresh:
                time.sleep(0.2)  # the rest of the cycle
            return latest[-1]
        finally:
            client.disconnect()
            client.loop_stop()

    def publish_many(
        self,
        messages: Iterable[tuple[str, bytes | str]],
        *,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 60.0,
    ) -> int:
        """Publish `(topic, payload)` pairs from a throw-away MQTT v5 client; wait until all are
        acknowledged by the broker (QoS > 0) or written to the socket (QoS 0). Returns the count."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.connect(self.host, self.port)
        client.loop_start()
        try:
            infos = [client.publish(topic, payload, qos=qos, retain=retain) for topic, payload in messages]
            deadline = time.monotonic() + timeout
            for info in infos:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    raise TimeoutError(f"publishing {len(infos)} messages took longer than {timeout} s")
            return len(infos)
        finally:
            client.disconnect()
            client.loop_stop()

    # --- internals ---------------------------------------------------------------------------------
    def _config(self) -> str:
        text = render_broker_config(
            port=self.port,
            bind=self.host,
            persistence_dir=self.data_dir if self.persistence else None,
            max_queued_bytes=self.max_queued_bytes,
            autosave=self.autosave,
        )
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root, mosquitto would switch to the `mosquitto` user, who cannot write our temp dir.
            text += "\nuser root\n"
        if self.extra_config:
            text += "\n" + self.extra_config.strip() + "\n"
        return text
