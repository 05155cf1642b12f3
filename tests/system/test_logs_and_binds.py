"""Logs are JSON lines when not on a terminal and human lines on one; Dagster's beta/preview warnings
about features the code location uses on purpose are silenced where the location is built; the
listener's metrics endpoint binds 127.0.0.1 unless configured otherwise."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from iot_core.settings import Settings
from tests.support.ports import free_port, port_accepts
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
LOG_SOME = (
    "import logging, structlog\n"
    "from iot_core.logs import configure_logging\n"
    "configure_logging()\n"
    "logging.getLogger('iot.test').info('stdlib line %d', 1)\n"
    "structlog.get_logger('iot.test').warning('structured', windows=3)\n"
)


def test_logs_are_one_json_object_per_line_when_not_on_a_terminal() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOG_SOME], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(r["event"], r["level"], r["logger"]) for r in records] == [
        ("stdlib line 1", "info", "iot.test"),
        ("structured", "warning", "iot.test"),
    ]
    assert records[1]["windows"] == 3 and all("timestamp" in r for r in records)


def test_logs_are_human_lines_on_a_terminal() -> None:
    pid, fd = pty.fork()
    if pid == 0:  # child: stderr is the pseudo-terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-c", LOG_SOME])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert "stdlib line 1" in text and "structured" in text and "windows" in text
    assert '"event"' not in text  # not JSON


def test_dagster_beta_and_preview_warnings_are_silenced_at_the_code_location() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import dagster_project.definitions"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "BetaWarning" not in result.stderr and "PreviewWarning" not in result.stderr


def _metrics_up(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as response:
            return b"iot_listener_ready" in response.read()
    except OSError:
        return False


@pytest.mark.services
@pytest.mark.parametrize("configured", [None, "127.0.0.2"])
def test_listener_metrics_bind_loopback_unless_configured(configured: str | None) -> None:
    assert Settings.model_fields["listener_metrics_host"].default == "127.0.0.1"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_")}
    env.update(IOT_LISTENER_METRICS_PORT=str(port), IOT_MQTT_PORT=str(free_port()))
    if configured:
        env["IOT_LISTENER_METRICS_HOST"] = configured
    bound, other = (configured, "127.0.0.1") if configured else ("127.0.0.1", "127.0.0.2")
    listener = subprocess.Popen(
        [str(Path(sys.executable).with_name("iot-etl")), "listen"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: listener.poll() is not None or _metrics_up(bound, port), 60)
        assert listener.poll() is None, listener.stderr.read().decode() if listener.stderr else ""
        assert not port_accepts(other, port)  # 0.0.0.0 would answer on every loopback address
        listen = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
        assert f"{bound}:{port}" in listen.stdout, listen.stdout
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(30)


def test_compose_lets_prometheus_scrape_the_listener() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    listener_env = compose["services"]["listener"]["environment"]
    assert listener_env["IOT_LISTENER_METRICS_HOST"] == "0.0.0.0"
    assert "listener:9108" in (ROOT / "deploy" / "prometheus.yml").read_text()
