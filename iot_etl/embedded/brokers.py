"""The embedded MQTT broker: the installed Mosquitto with the project's configuration (plain, or with mTLS
under `IOT_SECURITY`), else the demo broker where no Mosquitto is installed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from iot_core.settings import Settings
from iot_etl import demo_broker
from iot_etl.broker import BrokerNotInstalledError, broker_argv
from iot_etl.embedded.service import Address, ServiceProcess, services_dir
from iot_etl.embedded.system_state import system_state_dir


def broker_process(settings: Settings) -> ServiceProcess:
    """The installed Mosquitto with the project's configuration; without Mosquitto the demo broker
    (raises BrokerNotInstalledError when neither is installed)."""
    workdir = services_dir(settings).parent / "broker"
    address = Address(settings.mqtt_host, settings.mqtt_port)
    try:
        argv = broker_argv(settings, workdir)
    except BrokerNotInstalledError as no_mosquitto:
        if importlib.util.find_spec("iotcore") is None:
            raise BrokerNotInstalledError(f"{no_mosquitto}, and the package iotcore is not either") from None
        return demo_broker_process(settings, address)
    detail = f"the project's Mosquitto, data {workdir / 'data'}"
    return ServiceProcess("mqtt", argv, workdir / "mosquitto.log", address, detail)


def secure_broker_dir(settings: Settings) -> Path:
    """Where `up`'s TLS broker keeps its configuration, certificates and sessions.

    Run by a plain user, the broker runs as that user: `<state>/broker`, private. Run by root, Mosquitto
    drops to its own user, which must read its files and pass through every folder above them; a state
    folder under a private home (0700) is out of its reach, and its files would have to be group-readable
    inside a state folder that is otherwise private. So as root they live in a folder of their own under
    `system_state_dir`."""
    local = services_dir(settings).parent / "broker"
    return local if os.geteuid() != 0 else system_state_dir(settings) / "broker"


def secure_broker_process(settings: Settings) -> ServiceProcess:
    """The installed Mosquitto with the device and service listeners (IOT_SECURITY): the demo broker cannot
    verify client certificates, so without Mosquitto this raises BrokerNotInstalledError."""
    workdir = secure_broker_dir(settings)
    address = Address(settings.mqtt_service_host, settings.mqtt_service_port)
    argv = broker_argv(settings, workdir)  # the TLS configuration: settings.security is on
    detail = (
        f"the project's Mosquitto with mTLS: devices on {settings.mqtt_host}:{settings.mqtt_tls_port}, "
        f"services on {address}, certificates {settings.pki_dir.resolve()}, data {workdir}"
    )
    return ServiceProcess("mqtt", argv, workdir / "mosquitto.log", address, detail)


def demo_broker_process(settings: Settings, address: Address) -> ServiceProcess:
    """rumqttd from the iotcore wheel (`iot_etl.demo_broker`): what a machine without Mosquitto runs."""
    workdir = services_dir(settings) / "demo-broker"
    config = demo_broker.write_config(workdir, address.host, address.port)
    argv = [sys.executable, "-m", "iot_etl.demo_broker", str(config)]
    detail = (
        "DEMO broker (no mosquitto on PATH): MQTT 5 only, sessions and queued messages lost on restart, "
        "no ACLs; install mosquitto for a real one"
    )
    return ServiceProcess("mqtt", argv, workdir / "demo-broker.log", address, detail)
