"""Scalar values as devices send them: numbers, numbers with units, booleans, short text."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from iot_core.formats.errors import DecodeError

MAX_TEXT = 256
_NUMBER_WITH_UNIT = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?:\s*(\S(?:.{0,30}\S)?))?$")
_BOOLEANS = {"true": 1.0, "false": 0.0, "on": 1.0, "off": 0.0}
_NOT_FINITE = re.compile(r"^[-+]?(nan|inf|infinity)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Value:
    value_num: float | None
    value_text: str | None
    unit: str = ""


def finite(number: float, what: str) -> float:
    if not math.isfinite(number):
        raise DecodeError("not_finite", f"{what} {number!r} is not a finite number")
    return number


def parse_text_value(text: str) -> Value:
    """`23.5`, `27.93 °C`, `true`/`on`, or a short state word."""
    stripped = text.strip()
    if not stripped:
        raise DecodeError("empty_value", "the payload holds no value")
    if _NOT_FINITE.match(stripped):
        raise DecodeError("not_finite", f"value {stripped!r} is not a finite number")
    match = _NUMBER_WITH_UNIT.match(stripped)
    if match:
        return Value(finite(float(match.group(1)), "value"), None, match.group(2) or "")
    lowered = stripped.lower()
    if lowered in _BOOLEANS:
        return Value(_BOOLEANS[lowered], lowered)
    if len(stripped) > MAX_TEXT:
        raise DecodeError("text_too_long", f"text value of {len(stripped)} characters (max {MAX_TEXT})")
    return Value(None, stripped)


def json_scalar(value: object, what: str = "value") -> Value:
    """A JSON value as stored: numbers numeric, booleans both 1/0 and text, strings as text values."""
    if isinstance(value, bool):
        return Value(1.0 if value else 0.0, "true" if value else "false")
    if isinstance(value, int | float):
        return Value(finite(float(value), what), None)
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise DecodeError("text_too_long", f"{what} of {len(value)} characters (max {MAX_TEXT})")
        if not value.strip():
            raise DecodeError("empty_value", f"{what} is an empty string")
        return Value(None, value)
    raise DecodeError("bad_value", f"{what} must be a number, boolean or string, got {type(value).__name__}")


def json_boolean(value: object, what: str) -> Value:
    if not isinstance(value, bool):
        raise DecodeError("bad_value", f"{what} must be a JSON boolean, got {str(value)[:40]!r}")
    return json_scalar(value, what)
