"""Device timestamps: ISO-8601 (with or without zone) and the F2 `YYYY-MM-DD HH:MM:SS.ffffff` form."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from iot_core.formats.errors import DecodeError


def parse_device_ts(value: object, default_tz: tzinfo) -> datetime:
    """A UTC-aware datetime; naive times are taken in `default_tz`."""
    if not isinstance(value, str) or not value.strip():
        raise DecodeError("bad_ts", f"timestamp must be an ISO-8601 string, got {value!r}"[:200])
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=default_tz)
        return parsed.astimezone(UTC)
    except ValueError as exc:
        raise DecodeError("bad_ts", f"timestamp {value!r} is not ISO-8601"[:200]) from exc
    except OverflowError as exc:  # year 1 or 9999 shifted past the calendar by its zone
        raise DecodeError("bad_ts", f"timestamp {value!r} is outside the calendar in UTC"[:200]) from exc


def is_sane(ts: datetime, arrival: datetime, *, max_future_s: int, min_year: int) -> bool:
    """A device clock we believe: not before `min_year`, not further ahead of arrival than allowed."""
    return ts.year >= min_year and (ts - arrival).total_seconds() <= max_future_s
