"""Run Mosquitto with the project's configuration (`iot-etl broker`, `iot-etl up --with-broker`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from iot_core.settings import Settings
from iot_etl.broker_config import render_broker_config


class BrokerNotInstalledError(RuntimeError):
    pass


def write_broker_config(settings: Settings, workdir: Path) -> Path:
    """The generated mosquitto.conf (persistence under `workdir`), on the configured MQTT host and port."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    text = render_broker_config(
        port=settings.mqtt_port,
        bind=settings.mqtt_host,
        persistence_dir=data,
        max_queued_bytes=settings.broker_max_queued_bytes,
    )
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # as root, mosquitto would switch to the `mosquitto` user, who cannot write our directory
        text += "\nuser root\n"
    path = workdir / "mosquitto.conf"
    path.write_text(text, encoding="utf-8")
    return path


def broker_argv(settings: Settings, workdir: Path) -> list[str]:
    binary = shutil.which("mosquitto")
    if binary is None:
        raise BrokerNotInstalledError(
            "mosquitto is not on PATH (Debian: apt-get install mosquitto, which puts it in /usr/sbin)"
        )
    return [binary, "-c", str(write_broker_config(settings, workdir))]
