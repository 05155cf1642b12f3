"""Unit spellings for the tests that hold the Python and the SQL mapping of units equal."""

from __future__ import annotations

from iot_core.formats.units import SYMBOLS, WORDS

#: Every spelling the table knows, in the cases and with the padding devices send, and some it must not map.
SPELLINGS: list[str | None] = [
    *SYMBOLS,
    *WORDS,
    *(w.upper() for w in WORDS),
    *(w.title() for w in WORDS),
    " C ",
    "\tdegC\r\n",
    "c",
    "f",
    "k",
    "°C",
    "%",
    "%RH",
    "hPa",
    "Pa",
    "kPa",
    "mW",
    "MW",
    "µg/m³",
    "ppm",
    "",
    "  ",
    "deg  c",
    "\u212aelvin",
    None,
]
