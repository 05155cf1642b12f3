"""The generated Mosquitto configuration: its contents, that a real broker with it keeps what a
stopped subscriber has not taken yet (the default 1000 limit drops QoS 1 messages), and what a broker
crash can still lose."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_core.formats.topics import parse_topic, topic_device
from iot_core.pki_issue import init_pki, issue_server, issue_service
from iot_core.pki_layout import PkiLayout
from iot_core.settings import get_settings
from iot_etl.broker import broker_account
from iot_etl.broker_acl import topic_matches
from iot_etl.broker_config import AUTOSAVE, Autosave, render_broker_config
from iot_etl.broker_values import ConfigValueError
from iot_etl.cli import main
from iot_etl.tls_broker_config import (
    PACKET_OVERHEAD_BYTES,
    TlsBrokerConfig,
    TlsFiles,
    render_tls_broker_config,
)
from tests.support import PrivateMosquitto
from tests.support.broker_crash import measure_crash_loss
from tests.support.waiting import wait_until


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, []).append(value)
    return out


def test_config_lifts_count_limit_and_bounds_bytes(tmp_path: Path) -> None:
    text = render_broker_config(
        port=18830, bind="0.0.0.0", persistence_dir=tmp_path, max_queued_bytes=1234567
    )
    d = _directives(text)
    assert d["listener"] == ["18830 0.0.0.0"]
    assert d["allow_anonymous"] == ["true"]
    assert d["max_queued_messages"] == ["0"]
    assert d["max_queued_bytes"] == ["1234567"]
    assert int(d["max_inflight_messages"][0]) >= 20
    assert d["persistent_client_expiration"] == ["7d"]
    assert d["sys_interval"] == ["5"]
    assert d["persistence"] == ["true"]
    assert d["persistence_location"] == [str(tmp_path)]
    assert d["autosave_interval"] == [str(AUTOSAVE.interval)]
    assert d["autosave_on_changes"] == ["true" if AUTOSAVE.on_changes else "false"]


def test_config_autosave_rule() -> None:
    d = _directives(
        render_broker_config(
            port=1883,
            bind="127.0.0.1",
            persistence_dir=Path("/data"),
            max_queued_bytes=0,
            autosave=Autosave(interval=50, on_changes=True),
        )
    )
    assert d["autosave_interval"] == ["50"] and d["autosave_on_changes"] == ["true"]
    with pytest.raises(ValueError):
        Autosave(interval=0)


def test_config_without_persistence() -> None:
    d = _directives(
        render_broker_config(port=1883, bind="127.0.0.1", persistence_dir=None, max_queued_bytes=0)
    )
    assert d["persistence"] == ["false"]
    assert "persistence_location" not in d


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        render_broker_config(port=0, bind="127.0.0.1", persistence_dir=None, max_queued_bytes=1)
    with pytest.raises(ValueError):
        render_broker_config(port=1883, bind="127.0.0.1", persistence_dir=None, max_queued_bytes=-1)


class _Subscriber:
    """A plain persistent-session subscriber (auto-ack), to test the broker on its own."""

    def __init__(self, broker: PrivateMosquitto, client_id: str) -> None:
        self.received: list[bytes] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.received.append(m.payload)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.services
def test_broker_queues_beyond_1000_for_stopped_subscriber_across_restart() -> None:
    n = 3000  # three times Mosquitto's default max_queued_messages
    with PrivateMosquitto() as broker:
        sub = _Subscriber(broker, "cfg-test-sub")
        sub.client.subscribe("devices/#", qos=1)
        assert sub.subscribed.wait(5)
        sub.close()

        broker.publish_many(((f"devices/d{i % 7}/seq", str(i)) for i in range(n)), qos=1)
        # the counter that reveals drops is there, and nothing was dropped (a 1000 limit drops 2000)
        assert broker.sys_value("$SYS/broker/publish/messages/dropped", fresh=True) == "0"
        broker.restart()  # clean stop saves the session and its queue; start loads them

        sub = _Subscriber(broker, "cfg-test-sub")
        try:
            wait_until(lambda: len(sub.received) >= n, 20)
            time.sleep(0.2)
            assert sorted(int(p) for p in sub.received) == list(range(n))
        finally:
            sub.close()


@pytest.mark.services
@pytest.mark.slow
def test_broker_crash_loses_at_most_the_last_snapshot_period() -> None:
    """SIGKILL mid-stream: what the broker acknowledged but had not snapshotted yet is lost, no more.

    Mosquitto snapshots when its whole-second clock is more than `interval` seconds past the last
    snapshot, so at most `interval + 1` seconds of acknowledged messages are unsaved at any moment;
    one more second allows for a broker that a loaded machine schedules late."""
    assert not AUTOSAVE.on_changes
    span = AUTOSAVE.interval + 2.0
    result = measure_crash_loss(AUTOSAVE, count=1200, rate=60.0, kill_after_s=10.0, spans_s=(span,))
    assert result.session_restored, "the subscriber's session did not survive the crash"
    assert result.acked >= 300, f"only {result.acked} messages were acknowledged before the crash"
    assert result.lost <= result.acked_within[span], result


# --- the TLS broker ------------------------------------------------------------------------------------


def _tls(**overrides: object) -> TlsBrokerConfig:
    args: dict[str, object] = {
        "device_port": 8883,
        "device_bind": "127.0.0.1",
        "service_port": 8884,
        "service_bind": "127.0.0.1",
        "files": TlsFiles.in_dir(Path("/srv/broker")),
        "services": {"listener": "listener", "publisher": "publisher", "sim": "simulator", "ops": "ops"},
        "persistence_dir": Path("/srv/broker/data"),
        "max_queued_bytes": 1000,
        "max_payload_bytes": 262144,
        "ack_topic_template": "qs/v1/{device_id}/acks",
        "deadletter_topic": "qs/v1/deadletter",
    }
    args.update(overrides)
    return render_tls_broker_config(**args)  # type: ignore[arg-type]


def _acl_blocks(text: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    user = ""
    for line in text.splitlines():
        if line.startswith("user "):
            user = line.split(" ", 1)[1]
            blocks[user] = []
        elif line.startswith("topic "):
            blocks[user].append(line.split(" ", 1)[1])
    return blocks


def test_tls_config_two_listeners_no_plaintext_no_anonymous_no_root() -> None:
    config = _tls()
    d = _directives(config.conf)
    assert d["per_listener_settings"] == ["true"]
    assert d["listener"] == ["8883 127.0.0.1", "8884 127.0.0.1"]
    assert d["cafile"] == ["/srv/broker/device-ca.pem", "/srv/broker/service-ca.pem"]
    assert d["certfile"] == ["/srv/broker/server.pem"] * 2 and d["keyfile"] == ["/srv/broker/server.key"] * 2
    assert d["crlfile"] == ["/srv/broker/crl.pem"] * 2
    assert d["require_certificate"] == ["true"] * 2 and d["use_identity_as_username"] == ["true"] * 2
    assert d["use_username_as_clientid"] == [
        "true"
    ]  # the device listener only (the ACK publisher's ids vary)
    assert d["allow_anonymous"] == ["false"] * 2
    assert d["acl_file"] == ["/srv/broker/acl-devices", "/srv/broker/acl-services"]
    assert d["max_packet_size"] == [str(262144 + PACKET_OVERHEAD_BYTES)]
    assert d["retain_available"] == ["false"]
    assert d["max_queued_messages"] == ["0"] and d["persistence_location"] == ["/srv/broker/data"]
    assert "user" not in d and "password_file" not in d


def test_device_acl_patterns_cover_exactly_the_three_formats_of_the_device() -> None:
    d = _directives(_tls().acl_devices)
    assert d["pattern"] == [
        "write devices/%u/+",
        "write qs/v1/%u/events",
        "write stat/%u/#",
        "write tele/%u/#",
        "read qs/v1/%u/acks",
    ]
    # what the simulator publishes matches a write pattern of its own device, and parses as its format
    for topic, device, kind in [
        ("devices/a1b2c3d4/temperature", "a1b2c3d4", "plain"),
        ("qs/v1/esp32-01/events", "esp32-01", "event"),
        ("tele/f2-aabbccddee01/SENSOR/1/BME280", "f2-aabbccddee01", "f2_sensor"),
        ("stat/f2-aabbccddee01/door-sensors", "f2-aabbccddee01", "f2_doors"),
    ]:
        assert parse_topic(topic).kind == kind and topic_device(topic) == device
        filters = [p.split(" ", 1)[1].replace("%u", device) for p in d["pattern"] if p.startswith("write")]
        assert sum(topic_matches(f, topic) for f in filters) == 1, topic


def test_service_acl_grants_each_role_only_its_topics() -> None:
    blocks = _acl_blocks(_tls().acl_services)
    assert blocks == {
        "iot-etl-listener": ["read devices/#", "read qs/v1/+/events", "read stat/#", "read tele/#"],
        "iot-etl-ops": ["read qs/v1/deadletter", "read $SYS/#"],
        "iot-etl-publisher": ["write qs/v1/+/acks", "write qs/v1/deadletter"],
        "iot-etl-sim": ["write devices/#", "write qs/v1/+/events", "write stat/#", "write tele/#"],
    }
    custom = _tls(ack_topic_template="fb/{device_id}/ack", deadletter_topic="fb/dead")
    assert "pattern read fb/%u/ack" in custom.acl_devices
    assert _acl_blocks(custom.acl_services)["iot-etl-publisher"] == ["write fb/+/ack", "write fb/dead"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"device_bind": "127.0.0.1\nlistener 1884 0.0.0.0\nallow_anonymous true"},
        {"service_bind": "127.0.0.1\rallow_anonymous true"},
        {"persistence_dir": Path("/data\nallow_anonymous true")},
        {"files": TlsFiles.in_dir(Path("/srv/b\x00x"))},
        {"services": {"ops\nuser admin": "ops"}},
        {"services": {"ops": "root"}},
        {"deadletter_topic": "qs/v1/dead\nletter"},
        {"deadletter_topic": "devices/x/dead"},  # devices could publish forged dead letters
        {"deadletter_topic": "qs/v1/+/dead"},
        {"ack_topic_template": "qs/v1/acks"},
        {"ack_topic_template": "qs/{device_id}/{device_id}"},
        {"device_port": 8884, "service_port": 8884},
        {"max_payload_bytes": 0},
    ],
)
def test_tls_config_refuses_values_that_could_inject_lines_or_widen_access(
    overrides: dict[str, object],
) -> None:
    with pytest.raises(ConfigValueError) as refused:
        _tls(**overrides)
    assert "\n" not in str(refused.value)


def test_plain_config_refuses_a_newline_in_a_value() -> None:
    with pytest.raises(ConfigValueError, match="line break"):
        render_broker_config(
            port=1883, bind="127.0.0.1\nallow_anonymous true", persistence_dir=None, max_queued_bytes=0
        )
    with pytest.raises(ConfigValueError, match="line break"):
        render_broker_config(
            port=1883, bind="127.0.0.1", persistence_dir=Path("/d\nlistener 1 0.0.0.0"), max_queued_bytes=0
        )


# --- iot-etl broker-config (the command) ----------------------------------------------------------------


def _run(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, args, env=env)
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def passable(tmp_path: Path) -> Iterator[Path]:
    """A folder the broker's user can pass through (pytest's own are below a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="broker-config-"))
    os.chmod(folder, 0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pki(passable: Path) -> PkiLayout:
    layout = PkiLayout(passable / "pki")
    init_pki(layout)
    issue_server(layout, [])
    for role in ("listener", "publisher", "ops"):
        issue_service(layout, role)
    return layout


def test_cli_plain_output_says_trusted_network_first_and_refuses_a_newline(tmp_path: Path) -> None:
    code, out, _ = _run(["broker-config"], {})
    assert code == 0 and out.splitlines()[0].startswith("# FOR A TRUSTED NETWORK ONLY")
    code, out, err = _run(["broker-config", "--persistence-dir", "/d\nallow_anonymous true"], {})
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "persistence" in err


def test_cli_tls_before_certs_init_writes_nothing(tmp_path: Path) -> None:
    out_dir = tmp_path / "broker"
    code, _out, err = _run(
        ["broker-config", "--tls", "--out", str(out_dir)], {"IOT_PKI_DIR": str(tmp_path / "pki")}
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "certs init" in err, err
    assert not out_dir.exists()
    code, _, err = _run(["broker-config", "--tls"], {"IOT_PKI_DIR": str(tmp_path / "pki")})
    assert code == 2 and "certs init" in err


@pytest.mark.parametrize(
    "damage", ["server cert not PEM", "key of another cert", "CA not PEM", "crl missing"]
)
def test_cli_tls_refuses_a_broken_pki_and_writes_nothing(pki: PkiLayout, tmp_path: Path, damage: str) -> None:
    if damage == "server cert not PEM":
        pki.server_cert.write_text("garbage-content-xyz\n")
    elif damage == "key of another cert":
        pki.server_key.write_bytes(pki.service("ops")[1].read_bytes())
    elif damage == "CA not PEM":
        pki.device_ca_cert.write_bytes(b"\x00garbage")
    else:
        pki.crl.unlink()
    out_dir = tmp_path / "broker"
    code, _, err = _run(["broker-config", "--tls", "--out", str(out_dir)], {"IOT_PKI_DIR": str(pki.root)})
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    secret = pki.service("ops")[1].read_text().splitlines()[1]
    assert "garbage-content-xyz" not in err and secret not in err  # names files, never contents
    assert not out_dir.exists()


def test_cli_tls_refuses_a_newline_in_the_output_dir(pki: PkiLayout, tmp_path: Path) -> None:
    out_dir = tmp_path / "b\nallow_anonymous true"
    code, _, err = _run(["broker-config", "--tls", "--out", str(out_dir)], {"IOT_PKI_DIR": str(pki.root)})
    assert code == 2 and "line break" in err and not out_dir.exists()


def test_cli_tls_writes_files_only_the_broker_user_can_read(pki: PkiLayout, passable: Path) -> None:
    out_dir = passable / "broker"
    old = os.umask(0o022)
    try:
        code, _out, err = _run(
            ["broker-config", "--tls", "--out", str(out_dir), "--port", "18883"],
            {"IOT_PKI_DIR": str(pki.root)},
        )
    finally:
        os.umask(old)
    assert code == 0, err
    names = {p.name for p in out_dir.iterdir()}
    assert names == {
        "mosquitto.conf",
        "acl-devices",
        "acl-services",
        "device-ca.pem",
        "service-ca.pem",
        "server.pem",
        "server.key",
        "crl.pem",
        "data",
    }
    account = broker_account()
    assert stat.S_IMODE(out_dir.stat().st_mode) == account.dir_mode
    for name in names - {"data"}:
        info = (out_dir / name).stat()
        assert stat.S_IMODE(info.st_mode) == account.file_mode, name
        assert (info.st_uid, info.st_gid) == (account.file_uid, account.file_gid), name
        assert not info.st_mode & stat.S_IRWXO, name
    data = (out_dir / "data").stat()
    assert stat.S_IMODE(data.st_mode) == 0o700 and data.st_uid == account.data_uid
    assert (out_dir / "server.key").read_bytes() == pki.server_key.read_bytes()
    d = _directives((out_dir / "mosquitto.conf").read_text())
    assert d["listener"][0].startswith("18883 ") and d["persistence_location"] == [str(out_dir / "data")]
    assert _acl_blocks((out_dir / "acl-services").read_text()).keys() == {
        "iot-etl-listener",
        "iot-etl-publisher",
        "iot-etl-ops",
    }
    if os.geteuid() == 0:
        assert account.shared and (out_dir / "server.key").stat().st_gid == grp.getgrnam("mosquitto").gr_gid


def test_tls_out_dir_behind_a_folder_the_broker_user_cannot_pass_is_refused(
    pki: PkiLayout, tmp_path: Path
) -> None:
    if not broker_account().shared:
        pytest.skip("the broker runs as this user: nothing to pass")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    code, _, err = _run(
        ["broker-config", "--tls", "--out", str(locked / "broker")], {"IOT_PKI_DIR": str(pki.root)}
    )
    assert code == 2 and str(locked) in err and not (locked / "broker").exists()
