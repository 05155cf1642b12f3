"""What `up` keeps for identity: certificates issued once, a revocation list renewed at half-life, a change by
someone else noticed, and `status`'s warning a week before the list expires."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from iot_core.pki_crl import crl_next_update, revoke, write_crl
from iot_core.settings import Settings
from iot_etl.pki_upkeep import CrlChange, CrlWatch, crl_warning, ensure_pki, layout_of, server_sans


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(pki_dir=tmp_path / "pki", **values)


def test_ensure_pki_issues_what_is_missing_once_and_keeps_keys_private(tmp_path: Path) -> None:
    settings = _settings(tmp_path, mqtt_host="broker.example.net", mqtt_service_host="10.1.2.3")
    lines = ensure_pki(settings, ["dev-a"])
    assert lines[0] == "created the device CA and the service CA"
    assert any("listener, publisher, simulator, ops" in line for line in lines)
    assert any("1 device certificate" in line for line in lines)
    assert "DNS:broker.example.net" in server_sans(settings) and "IP:10.1.2.3" in server_sans(settings)
    layout = layout_of(settings)
    for role in ("listener", "publisher", "simulator", "ops"):
        cert, key = layout.service(role)
        assert cert.is_file() and key.stat().st_mode & 0o077 == 0
    assert ensure_pki(settings, ["dev-a"]) == []  # nothing to do the second time


def test_crl_watch_notices_a_revocation_and_renews_at_half_life(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ensure_pki(settings)
    layout = layout_of(settings)
    watch = CrlWatch(layout, crl_days=30)
    assert watch.poll() is CrlChange.NONE
    assert revoke(layout, "ops")
    watch._next_check = 0.0  # the watch looks at most once a second
    assert watch.poll() is CrlChange.CHANGED
    watch._next_check = 0.0
    assert watch.poll() is CrlChange.NONE
    write_crl(layout, dt.timedelta(seconds=30))  # backdated more than that: past its half-life at once
    watch = CrlWatch(layout, crl_days=30)
    assert watch.poll() is CrlChange.RENEWED
    ends = crl_next_update(layout)
    assert ends is not None and ends - dt.datetime.now(dt.UTC) > dt.timedelta(days=29)


def test_status_warns_a_week_before_the_revocation_list_expires(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    ensure_pki(settings)
    layout = layout_of(settings)
    assert crl_warning(layout) is None
    write_crl(layout, dt.timedelta(days=3))
    assert "expires at" in (crl_warning(layout) or "")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=4)
    assert "expired" in (crl_warning(layout, now=later) or "")
