"""Scalar values as devices send them: numbers, numbers with units, booleans, short text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from iot_core.formats.errors import DecodeError
from iot_core.formats.guards import DEFAULT_LIMITS, InvalidNumber, Limits, check_field, check_number

MAX_UNIT = 32
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
# Units a device may glue to a number without a space (`23.5C`, `50%`). Anything else glued to a
# numeral (`0x10`, `1,5`, `1.2.3`) is not a number with a unit, so the whole payload is a text value.
# fmt: off
GLUED_UNITS = frozenset((
    "%", "°", "°C", "°F", "C", "F", "K", "RH", "%RH", "V", "mV", "kV", "A", "mA", "µA", "uA", "W", "kW",
    "MW", "Wh", "kWh", "MWh", "VA", "kVA", "Hz", "kHz", "MHz", "Pa", "hPa", "kPa", "MPa", "bar", "mbar",
    "psi", "ppm", "ppb", "lx", "lux", "dB", "dBA", "dBm", "m", "cm", "mm", "km", "µm", "s", "ms", "µs",
    "min", "h", "d", "g", "kg", "mg", "l", "L", "ml", "mL", "m³", "m3", "m/s", "km/h", "mph", "rpm", "bpm",
    "Ω", "kΩ", "µT", "mT", "µg/m³", "ug/m3", "mg/m³", "N", "Nm", "J", "kJ", "kcal", "deg", "rad", "mm/h",
    "l/min", "L/min", "m³/h", "m3/h", "µS/cm", "uS/cm", "mS/cm", "W/m²", "W/m2", "pH", "NTU",
))
# fmt: on
_BOOLEANS = {"true": 1.0, "false": 0.0, "on": 1.0, "off": 0.0}
_NOT_FINITE = re.compile(r"^[-+]?(nan|inf|infinity)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Value:
    value_num: float | None
    value_text: str | None
    unit: str = ""


def _number_with_unit(text: str) -> tuple[str, str] | None:
    """(numeral, unit) when `text` is a number, alone or followed by a unit; None when it is text.
    A numeral followed by more than one word (`27.93 °C °C`) is refused (`bad_unit`): neither a reading
    with a unit nor a text value, and the device should hear of it."""
    match = _NUMBER.match(text)
    if match is None:
        return None
    rest = text[match.end() :]
    if not rest:
        return match.group(), ""
    if rest[0].isspace():
        unit = rest.strip()
        if len(unit) > MAX_UNIT or "\n" in unit:
            return None
        if len(unit.split()) > 1:  # `27.93 °C °C`: one unit is one word, as the vectorised path reads it
            raise DecodeError("bad_unit", f"unit {unit!r} after the number is more than one word: send one")
        return match.group(), unit
    return (match.group(), rest) if rest in GLUED_UNITS else None


def parse_text_value(text: str, limits: Limits = DEFAULT_LIMITS) -> Value:
    """`23.5`, `27.93 °C`, `23.5C`, `true`/`on`, or a short text such as a state word."""
    stripped = text.strip()
    if not stripped:
        raise DecodeError("empty_value", "the payload holds no value")
    if _NOT_FINITE.match(stripped):
        raise DecodeError("not_finite", f"value {stripped!r} is not a finite number")
    number = _number_with_unit(stripped)
    if number is not None:
        numeral, unit = number
        return Value(check_number(float(numeral), "value"), None, check_field(unit, "unit", limits))
    lowered = stripped.lower()
    if lowered in _BOOLEANS:
        return Value(_BOOLEANS[lowered], lowered)
    return Value(None, check_field(stripped, "text value", limits))


def json_scalar(value: object, what: str = "value", limits: Limits = DEFAULT_LIMITS) -> Value:
    """A JSON value as stored: numbers numeric, booleans both 1/0 and text, strings as text values."""
    if isinstance(value, InvalidNumber):
        raise value.error()
    if isinstance(value, bool):
        return Value(1.0 if value else 0.0, "true" if value else "false")
    if isinstance(value, int | float):
        return Value(check_number(value, what), None)
    if isinstance(value, str):
        check_field(value, what, limits)
        if not value.strip():
            raise DecodeError("empty_value", f"{what} is an empty string")
        return Value(None, value)
    raise DecodeError("bad_value", f"{what} must be a number, boolean or string, got {type(value).__name__}")


def json_boolean(value: object, what: str) -> Value:
    if not isinstance(value, bool):
        raise DecodeError("bad_value", f"{what} must be a JSON boolean, got {str(value)[:40]!r}")
    return json_scalar(value, what)
