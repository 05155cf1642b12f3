"""A real listener on a private topic root, and a real Prometheus (Debian's `prometheus`) scraping its
/metrics every second, for the dashboards' Prometheus panels."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ingest_listener import Listener
from iot_core.mqtt.endpoint import MqttEndpoint
from iot_core.mqtt.publisher import Publisher
from iot_core.settings import Settings
from simulator.messages import MessageFactory
from tests.support.ports import free_port, wait_for_port
from tests.support.waiting import wait_until

PROMETHEUS = shutil.which("prometheus")


@dataclass(frozen=True)
class ScrapedListener:
    listener: Listener
    #: Topics under this root reach the listener and no one else's (e.g. `<root>/devices/x/up`).
    topic_root: str
    prometheus_url: str

    def query(self, expr: str) -> list[dict]:
        """An instant query's result series."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        if body["status"] != "success":
            raise RuntimeError(f"Prometheus refused {expr!r}: {body}")
        return list(body["data"]["result"])

    def publish_for(self, settings: Settings, seconds: float, rate: float = 20.0) -> int:
        """Simulated messages (a fifth of them bad) to the listener at `rate` a second for `seconds`,
        under its private topic root; how many the broker acknowledged."""
        factory = MessageFactory(7, devices=3, bad_share=0.2)
        with Publisher(MqttEndpoint.from_settings(settings), "scraped-publisher") as publisher:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                message = factory.next(datetime.now(UTC))
                publisher.publish(f"{self.topic_root}/{message.topic}", message.payload, message.qos)
                time.sleep(1 / rate)
            publisher.wait_for_acks(30)
            return publisher.acked

    def samples_scraped(self) -> float:
        """How many samples of the listener Prometheus has (0 while it is still starting)."""
        try:
            result = self.query("count_over_time(iot_listener_ready[5m])")
        except (OSError, urllib.error.URLError):
            return 0.0
        return float(result[0]["value"][1]) if result else 0.0


def private_listener(settings: Settings, metrics_port: int, topic_root: str) -> Listener:
    """A listener (not started) of its own: own client id, own stream, only `topic_root/#`."""
    return Listener(
        settings.model_copy(
            update={
                "listener_metrics_port": metrics_port,
                "listener_client_id": f"private-{uuid.uuid4().hex[:10]}",
                "listener_topics": [f"{topic_root}/#"],
                "stream_prefix": f"private:{uuid.uuid4().hex}:raw",
            }
        )
    )


@contextmanager
def scraped_listener(settings: Settings, workdir: Path, *, samples: int = 3) -> Iterator[ScrapedListener]:
    """Listener and Prometheus running, with at least `samples` scrapes in (rate() needs two)."""
    if PROMETHEUS is None:
        raise RuntimeError("prometheus is not installed (Debian package `prometheus`)")
    metrics_port, prom_port = free_port(), free_port()
    topic_root = f"scraped/{uuid.uuid4().hex}"
    (workdir / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "iot-listener",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    listener = private_listener(settings, metrics_port, topic_root)
    listener.start()
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not listener.wait_ready(15):
            raise TimeoutError("the listener did not become ready")
        wait_for_port("127.0.0.1", prom_port, timeout=60, process=prometheus)
        scraped = ScrapedListener(listener, topic_root, f"http://127.0.0.1:{prom_port}")
        if not wait_until(lambda: scraped.samples_scraped() >= samples, 90, interval_s=0.5):
            raise TimeoutError("Prometheus did not scrape the listener")
        yield scraped
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=20)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()
        listener.stop()
