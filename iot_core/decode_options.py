"""The decoders' options from the one Settings object (the decoders themselves never read settings)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from iot_core.formats.batch import DecodeOptions
from iot_core.settings import Settings


def decode_options(settings: Settings) -> DecodeOptions:
    return DecodeOptions(
        default_tz=ZoneInfo(settings.device_timezone),
        max_future_s=settings.device_ts_max_future_s,
        min_year=settings.device_ts_min_year,
        max_payload_bytes=settings.max_payload_bytes,
        max_field_chars=settings.max_field_chars,
        max_meta_bytes=settings.max_meta_bytes,
    )
