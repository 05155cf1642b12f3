"""`run_simulation`: generate the seeded fleet's messages at a rate and publish them, then report.

Pacing follows a fixed schedule (message i is due at start + i/rate on the monotonic clock), so sleeping
late or a slow publish never accumulates drift; a run that falls behind catches up.

The fleet publishes through one connection (the `simulator` service's when IOT_SECURITY is on), or, with
a certificates directory, as the devices themselves: one connection per device to the device listener,
each with its own certificate and its device id as client id, as real devices do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from iot_core.errors import UserFacingError
from iot_core.formats.topics import topic_device
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import Publisher
from iot_core.pki_layout import PkiLayout
from iot_core.settings import Settings
from simulator.expected import KINDS, SentMessage
from simulator.messages import MessageFactory

log = logging.getLogger(__name__)

STOPPED_ACK_TIMEOUT_S = 5.0  # when stopped by a signal, do not outwait the supervisor's stop timeout


@dataclass(slots=True)
class SimulationReport:
    """What was sent, by kind and good/bad, and how much of it the broker acknowledged."""

    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {kind: {"good": 0, "bad": 0} for kind in KINDS}
    )
    elapsed_s: float = 0.0
    acked: int = 0
    failed: int = 0
    unacked: int = 0
    skipped: int = 0  # messages of a device without a connection (per-device certificates only)
    readings: int = 0  # expected measurement rows
    events: int = 0  # expected event rows
    messages: list[SentMessage] | None = None  # every message sent, when asked for (keep_messages=True)

    def add(self, message: SentMessage) -> None:
        self.counts[message.kind]["bad" if message.bad else "good"] += 1
        self.readings += len(message.readings)
        self.events += len(message.events)
        if self.messages is not None:
            self.messages.append(message)

    @property
    def good(self) -> int:
        return sum(c["good"] for c in self.counts.values())

    @property
    def bad(self) -> int:
        return sum(c["bad"] for c in self.counts.values())

    @property
    def total(self) -> int:
        return self.good + self.bad

    @property
    def rate(self) -> float:
        """Achieved messages per second, over the whole run including the wait for acknowledgements."""
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def table(self) -> str:
        lines = [f"{'kind':<6} {'good':>9} {'bad':>9} {'total':>9}"]
        for kind, c in self.counts.items():
            lines.append(f"{kind:<6} {c['good']:>9} {c['bad']:>9} {c['good'] + c['bad']:>9}")
        lines.append(f"{'all':<6} {self.good:>9} {self.bad:>9} {self.total:>9}")
        lines.append(
            f"{self.total} messages in {self.elapsed_s:.2f} s ({self.rate:.1f}/s); broker acknowledged "
            f"{self.acked}, failed {self.failed}, unacknowledged {self.unacked}"
        )
        lines.append(
            f"expected in the database: {self.readings} measurements, {self.events} events, "
            f"{self.bad} rejections"
        )
        if self.skipped:
            lines.append(f"not sent: {self.skipped} messages of devices without a certificate (unknown ones)")
        return "\n".join(lines)


class MissingDeviceCertificate(UserFacingError):
    """A device of the fleet has no certificate in the certificates directory."""

    def __init__(self, device_id: str, certs_dir: Path) -> None:
        super().__init__(
            f"device {device_id} has no certificate in {certs_dir / 'devices'}",
            f"issue it with `iot-etl certs device {device_id}` (IOT_PKI_DIR={certs_dir})",
        )
        self.device_id = device_id


def device_endpoints(
    settings: Settings, certs_dir: Path, device_ids: Iterable[str]
) -> dict[str, MqttEndpoint]:
    """Each device's connection to the device listener (IOT_MQTT_HOST:IOT_MQTT_TLS_PORT) with its own
    certificate `certs_dir/devices/<id>.pem`/`.key`, trusting `certs_dir/ca-chain.pem`.

    Raises MissingDeviceCertificate for the first device without one (before anything connects)."""
    layout = PkiLayout(certs_dir)
    endpoints: dict[str, MqttEndpoint] = {}
    for device_id in device_ids:
        cert, key = layout.device(device_id)
        if not (cert.is_file() and key.is_file()):
            raise MissingDeviceCertificate(device_id, certs_dir)
        endpoints[device_id] = MqttEndpoint(
            settings.mqtt_host,
            settings.mqtt_tls_port,
            tls_ca=layout.ca_chain,
            tls_cert=cert,
            tls_key=key,
            keepalive_s=settings.mqtt_keepalive_s,
        )
    return endpoints


def run_simulation(
    settings: Settings,
    *,
    rate: float,
    count: int | None = None,
    duration_s: float | None = None,
    seed: int,
    bad_share: float,
    kinds: tuple[str, ...] = KINDS,
    devices: int,
    qos: int = 1,
    on_sent: Callable[[SentMessage], None] | None = None,
    on_connected: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    keep_messages: bool = False,
    ack_timeout_s: float = 30.0,
    certs_dir: Path | None = None,
) -> SimulationReport:
    """Publish until `count` messages are sent, `duration_s` has passed or `stop` is set (neither count
    nor duration: until stopped), then wait for the broker's acknowledgements and report.

    `on_connected` is called once the broker accepted the session(s) (a broker that is down raises
    `PublishError` before it); `on_sent` is called in this thread right after each message is handed to
    the MQTT client. With `certs_dir` every device connects on its own (`device_endpoints`); a message of
    a device outside the fleet (a deliberately unknown one) is then not sent but counted as skipped.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
    stop = stop or threading.Event()
    factory = MessageFactory(
        seed,
        devices=devices,
        kinds=kinds,
        bad_share=bad_share,
        qos=qos,
        naive_tz=ZoneInfo(settings.device_timezone),
    )
    report = SimulationReport(messages=[] if keep_messages else None)
    interval = 1.0 / rate
    by_device: dict[str, Publisher] | None = None
    if certs_dir is not None:
        endpoints = device_endpoints(settings, certs_dir, factory.device_ids)
        by_device = {device: Publisher(e, "", client_id=device) for device, e in endpoints.items()}
        every = list(by_device.values())
    else:
        every = [Publisher(MqttEndpoint.for_role(settings, "simulator"), "iot-etl-simulator")]
    with ExitStack() as connections:
        for publisher in every:
            connections.enter_context(publisher)
        if on_connected is not None:
            on_connected()
        start = time.monotonic()
        sent = 0
        while not stop.is_set() and (count is None or sent < count):
            due = start + sent * interval
            if duration_s is not None and max(due, time.monotonic()) - start >= duration_s:
                stop.wait(max(0.0, start + duration_s - time.monotonic()))  # a run lasts its duration
                break
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            message = factory.next(datetime.now(UTC))
            target = every[0] if by_device is None else by_device.get(topic_device(message.topic))
            if target is None:  # its slot of the schedule goes to the next message
                report.skipped += 1
                continue
            if not target.publish(message.topic, message.payload, message.qos, stop):
                break
            report.add(message)
            sent += 1
            if on_sent is not None:
                on_sent(message)
        timeout = min(ack_timeout_s, STOPPED_ACK_TIMEOUT_S) if stop.is_set() else ack_timeout_s
        deadline = time.monotonic() + timeout
        for publisher in every:  # the acknowledgements of every connection, within one timeout
            publisher.wait_for_acks(max(0.0, deadline - time.monotonic()))
        report.elapsed_s = time.monotonic() - start
        report.acked = sum(p.acked for p in every)
        report.failed = sum(p.failed for p in every)
        report.unacked = sum(p.unacked for p in every)
        if report.unacked:
            log.warning("%d message(s) not acknowledged by the broker within %.0f s", report.unacked, timeout)
    return report
