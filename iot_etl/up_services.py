"""The services `iot-etl up` needs (PostgreSQL, Redis, the MQTT broker): each reported reachable, started
here where `up` may run it (`iot_etl.embedded`), or reported down; one line each.

`up`'s own broker under `IOT_SECURITY` is restarted when the revocation list changes and reloaded when it
is re-signed. These are the supervisor's methods for its services, kept apart from starting and stopping
the pipeline's processes.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from iot_core.settings import Settings
from iot_etl.broker import BrokerNotInstalledError
from iot_etl.children import Child, stop_children
from iot_etl.embedded.brokers import broker_process, secure_broker_process
from iot_etl.embedded.decision import should_embed, should_embed_broker, should_embed_secure_broker
from iot_etl.embedded.postgres import postgres_process
from iot_etl.embedded.readiness import postgres_answers, redis_answers, wait_ready
from iot_etl.embedded.service import Address, ServiceProcess, status_line, url_address
from iot_etl.embedded.valkey import redis_process
from iot_etl.startup import CannotStart, require_port_free


def port_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at `host:port` (within half a second)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _broker_left_alone(address: Address, embed: bool, reachable_detail: str = "") -> bool:
    """Whether `up` leaves the broker at `address` as it is, said in one line: one answers there, or none
    does and `up` is not to start one (`embed` False)."""
    if port_accepts(address.host, address.port):
        print(status_line("mqtt", "reachable", address, reachable_detail), flush=True)
        return True
    if not embed:
        print(status_line("mqtt", "down", address, "the listener retries until a broker answers"))
        return True
    return False


class ServiceStarts:
    """Starting and restarting the services; mixed into `Supervisor`, which holds the state they use."""

    # the supervisor's fields these methods use
    settings: Settings
    children: list[Child]
    broker: Child | None

    if TYPE_CHECKING:

        def say(self, line: str) -> None: ...

        def _spawn(self, child: Child, env: dict[str, str], announce: bool = True) -> None: ...

    def start_services(self, with_broker: bool) -> None:
        """Start PostgreSQL, Redis and the broker where `up` is to run them; one line per service."""
        settings = self.settings
        self._start_url_service("postgresql", "database_url", 5432, postgres_answers, postgres_process)
        self._start_url_service("redis", "redis_url", 6379, redis_answers, redis_process)
        if settings.security:
            self._start_secure_broker(with_broker)
            return
        mqtt = Address(settings.mqtt_host, settings.mqtt_port)
        if with_broker:
            require_port_free(mqtt.host, mqtt.port, "IOT_MQTT_PORT")
        elif _broker_left_alone(mqtt, should_embed_broker(settings)):
            return
        try:
            broker = broker_process(settings)
        except BrokerNotInstalledError as exc:
            if with_broker:
                raise
            detail = f"no broker available: {exc}; the listener retries until one answers"
            print(status_line("mqtt", "down", mqtt, detail), flush=True)
            return
        self._start_service(broker, lambda: port_accepts(mqtt.host, mqtt.port))

    def prime_listener_session(self) -> None:
        """Make the listener's session at the broker before anything publishes: a broker drops a message
        no subscription matches (acknowledging it to its publisher), so without the session the simulator's
        first messages and whatever devices sent while `up` started were lost on a new broker.
        One line when the session was made, or why it was not (the listener then subscribes itself)."""
        from ingest_listener.session import SessionError, prime_session
        from iot_core.errors import UserFacingError
        from iot_core.mqtt.endpoint import MqttEndpoint
        from iot_etl.listener_replicas import replica_settings

        endpoint = MqttEndpoint.for_role(self.settings, "listener")
        address = Address(endpoint.host, endpoint.port)
        if not port_accepts(address.host, address.port):
            return  # a broker that is down was reported by start_services
        made = 0
        for settings in replica_settings(self.settings):  # each replica's session takes its turns
            try:
                made += prime_session(settings)
            except (SessionError, UserFacingError) as exc:
                detail = f"no listener session yet ({exc}); the listener subscribes once it connects"
                print(status_line("mqtt", "no session", address, detail), flush=True)
                return
        if made:
            whose = "the listener's" if made == 1 else f"{made} listener replicas'"
            detail = f"{whose} subscriptions: the broker keeps its messages from now on"
            print(status_line("mqtt", "session", address, detail), flush=True)

    def _start_secure_broker(self, with_broker: bool) -> None:
        """The broker of devices with certificates: `up`'s own Mosquitto where it is to run one, else the
        one answering on the service listener's address. Never the demo broker (no client certificates)."""
        settings = self.settings
        service = Address(settings.mqtt_service_host, settings.mqtt_service_port)
        if with_broker:
            require_port_free(settings.mqtt_host, settings.mqtt_tls_port, "IOT_MQTT_TLS_PORT")
            require_port_free(service.host, service.port, "IOT_MQTT_SERVICE_PORT")
        elif _broker_left_alone(
            service,
            should_embed_secure_broker(settings),
            "service listener; restart that broker after a revocation",
        ):
            return
        try:
            broker = secure_broker_process(settings)
        except BrokerNotInstalledError as exc:
            raise CannotStart(
                f"IOT_SECURITY needs Mosquitto ({exc}); the demo broker cannot verify client certificates"
            ) from None
        self.broker = self._start_service(broker, lambda: port_accepts(service.host, service.port))

    def restart_broker(self, why: str) -> None:
        """Stop `up`'s broker cleanly (it saves sessions and queues) and start it again with a freshly
        written configuration: open connections end, and every new one meets the current CRL and ACLs."""
        child = self.broker
        if child is None or child.process is None:
            return
        stop_children([child], self.say)
        self.children.remove(child)
        child.process = None
        service = Address(self.settings.mqtt_service_host, self.settings.mqtt_service_port)
        self.broker = self._start_service(
            secure_broker_process(self.settings), lambda: port_accepts(service.host, service.port)
        )
        self.say(f"broker restarted: {why}")

    def reload_broker(self, why: str) -> None:
        """SIGHUP: Mosquitto reads its CRL and ACL files again, for new connections."""
        child = self.broker
        if child is not None and child.process is not None and child.process.poll() is None:
            # the broker reads copies in its own folder: write them again, then have it read them
            secure_broker_process(self.settings)
            child.process.send_signal(signal.SIGHUP)
            self.say(f"broker reloaded: {why}")

    def _start_url_service(
        self,
        name: str,
        field_name: str,
        default_port: int,
        answers: Callable[[str], bool],
        make_process: Callable[[Settings], ServiceProcess],
    ) -> None:
        """The service at the URL setting `field_name`: reported reachable, else started here where `up`
        may run it, else reported down; one line either way."""
        url = getattr(self.settings, field_name).get_secret_value()
        address = url_address(url, default_port)
        if answers(url):
            print(status_line(name, "reachable", address), flush=True)
        elif should_embed(self.settings, field_name, address.host):
            service = make_process(self.settings)
            if service.settings is not None:  # the embedded server's credentials, for `up` and its children
                self.settings = service.settings
                url = getattr(self.settings, field_name).get_secret_value()
            self._start_service(service, lambda: answers(url))
        else:
            print(status_line(name, "down", address), flush=True)

    def _start_service(self, service: ServiceProcess, ready: Callable[[], bool]) -> Child:
        child = Child(
            service.name,
            service.argv,
            service=True,
            stop_signal=service.stop_signal,
            user=service.user,
            log=service.log,
        )
        self._spawn(child, dict(os.environ), announce=False)
        assert child.process is not None
        process = child.process
        wait_ready(ready, f"the embedded {service.name} (log {service.log})", lambda: process.poll() is None)
        print(status_line(service.name, "started", service.address, service.detail), flush=True)
        return child
