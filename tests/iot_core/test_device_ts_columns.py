"""Device timestamps read column-wise (`ts_columns.device_ts`) give exactly what the per-message path
stores (`parse_device_ts`, then `is_sane` or arrival time) wherever they give anything, in any zone;
the forms devices send are read, not left to the per-message path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iot_core.formats.errors import DecodeError
from iot_core.formats.timestamps import is_sane, parse_device_ts
from iot_core.formats.ts_columns import device_ts
from iot_core.rows import UTC_US

ARRIVAL = datetime(2025, 3, 30, 1, 30, tzinfo=UTC)


class _Hourly(tzinfo):
    """A zone neither fixed nor zoneinfo: +1 h in odd hours, so every local time is asked for."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1) if dt is not None and dt.hour % 2 else timedelta(0)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)


ZONES: list[tzinfo] = [
    UTC,
    ZoneInfo("UTC"),
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Australia/Lord_Howe"),  # a 30-minute DST shift
    timezone(timedelta(hours=-5, seconds=7)),
    _Hourly(),
]


def reference(text: str | None, arrival: datetime, zone: tzinfo, min_year: int, max_future_s: int) -> object:
    if text is None:
        return None
    try:
        ts = parse_device_ts(text, zone)
    except DecodeError:
        return "rejected"
    return ts if is_sane(ts, arrival, max_future_s=max_future_s, min_year=min_year) else arrival


def check(
    texts: list[str | None], zone: tzinfo, *, min_year: int = 2000, max_future_s: int = 300
) -> list[object]:
    """Asserts agreement; returns the column-wise values."""
    arrivals = [ARRIVAL + timedelta(seconds=i) for i in range(len(texts))]
    got = device_ts(
        pl.Series("t", texts, pl.String),
        pl.Series("a", arrivals, UTC_US),
        zone,
        min_year=min_year,
        max_future_s=max_future_s,
    ).to_list()
    for text, arrival, value in zip(texts, arrivals, got, strict=True):
        if value is not None:
            assert value == reference(text, arrival, zone, min_year, max_future_s), (text, zone)
    return got


COMMON = [
    "2025-03-30T01:29:59.123Z",
    "2025-03-30T01:29:59Z",
    "2025-03-30T01:29:59.123456Z",
    "2025-03-30T03:29:59.123+02:00",
    "2025-03-29T20:29:59.123-05:00",
    "2025-03-30T02:30:00.000",  # in Berlin's gap
    "2025-10-26 02:30:00.000000",  # in Berlin's overlap, the F2 form
    "2025-03-30 01:29:59.543400",
    "1999-12-31T23:59:59.999Z",  # before min_year: arrival
    "2025-03-30T01:35:00.001Z",  # too far ahead: arrival
]


@pytest.mark.parametrize("zone", ZONES, ids=str)
def test_the_forms_devices_send_are_read_and_agree(zone: tzinfo) -> None:
    got = check(COMMON, zone)
    assert all(value is not None for value in got)


def test_outside_the_forms_or_the_calendar_nothing_is_decided() -> None:
    texts = [
        "2025-02-30T10:00:00Z", "2025-01-15T23:59:60Z", "2025-01-15T24:00:00Z", "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00", " 2025-01-15T10:00:00Z", "2025-01-15t10:00:00Z", "2025-01-15T10:00Z",
        "2025-01-15T10:00:00.1Z", "2025-01-15T10:00:00+24:00", "2025-01-15T10:00:00+0530", "", None,
    ]  # fmt: skip
    assert check(texts, UTC) == [None] * len(texts)
    # a naive time 1 h behind UTC: fine in year 1000, past the calendar at the end of 9999
    got = check(["1000-01-01T00:30:00", "9999-12-31T23:30:00"], timezone(timedelta(hours=-1)), min_year=1)
    assert [value is not None for value in got] == [True, False]


def test_a_sanity_limit_beyond_exact_arithmetic_leaves_everything_to_the_per_message_path() -> None:
    assert check(COMMON, UTC, max_future_s=2**33) == [None] * len(COMMON)
    assert all(v is not None for v in check(COMMON, UTC, max_future_s=2**33 - 1, min_year=1))


_DIGITS = st.integers(0, 99).map("{:02d}".format)
_TEXTS = st.builds(
    "{}{}-{}-{}{}{}:{}:{}{}{}{}".format,
    st.sampled_from(["", "", " "]),
    st.sampled_from(["0000", "0001", "0999", "1000", "1999", "2000", "2025", "2025", "9999"]),
    st.sampled_from(["00", "01", "02", "03", "10", "12", "13"]),
    st.sampled_from(["00", "01", "26", "28", "29", "30", "31", "32"]),
    st.sampled_from(["T", "T", " ", "t", "x"]),
    _DIGITS,
    _DIGITS,
    st.sampled_from(["00", "30", "59", "60"]),
    st.sampled_from(["", ".1", ".123", ".123456", ".1234567", "."]),
    st.sampled_from(["", "Z", "z", "+00:00", "-00:00", "+05:30", "-23:59", "+24:00", "+0530", "+02:00:00"]),
    st.sampled_from(["", "", " "]),
)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(st.one_of(_TEXTS, st.none(), st.text(max_size=30)), min_size=1, max_size=30),
    zone=st.sampled_from(ZONES),
    min_year=st.sampled_from([1, 2000, 2025, 2026]),
    max_future_s=st.sampled_from([-(10**6), 0, 300, 10**10, 2**33 - 1, 2**33]),
)
def test_generated_timestamps_agree_with_the_per_message_path(
    texts: list[str | None], zone: tzinfo, min_year: int, max_future_s: int
) -> None:
    check(texts, zone, min_year=min_year, max_future_s=max_future_s)


@settings(max_examples=100, deadline=None)
@given(
    local=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
    zone=st.sampled_from(ZONES),
)
def test_every_local_time_agrees_in_every_zone(local: datetime, zone: tzinfo) -> None:
    texts = [local.isoformat(sep=sep, timespec=spec) for sep in "T " for spec in ("seconds", "milliseconds")]
    got = check([*texts, local.isoformat(timespec="microseconds")], zone, min_year=1, max_future_s=2**33 - 1)
    assert all(value is not None for value in got)
