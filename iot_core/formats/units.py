"""One spelling per unit: `C`, `degC`, `celsius` and `℃` are all stored as `°C`.

A metric is keyed by its name and unit (`metrics`), so two spellings of one unit would make two metrics and
two series of the same readings. The storage step maps every unit a device or the F2 catalog gives to its
canonical spelling before it looks up the metric (and before it stores an event's unit); raw messages keep
the payload as sent. Only spellings of the same unit are mapped, values are never converted: `Pa`, `hPa`
and `kPa` stay three units, and so do `%` and `%RH` (a relative humidity is a percentage of saturation, not
of a whole, and the F2 catalog spells it `%RH`).

Matching, after spaces, tabs and line breaks at either end are removed:
- `SYMBOLS` exactly, case included: unit symbols are case-sensitive (`K` is kelvin, `k` the kilo prefix,
  `mW` and `MW` differ), so a lone `c` or `f` is not taken for `°C` or `°F` and is stored as sent.
- `WORDS` in any case: names and abbreviations of two or more ASCII characters (`degC`, `DEGC`, `Celsius`).
- anything else is stored as sent (trimmed).

sql/020_unit_spellings.sql defines the same mapping as the SQL function `canonical_unit(text)` for the
dashboards and for existing metrics; a test holds the two equal, so a new alias goes into both (a new
migration that replaces the function).
"""

from __future__ import annotations

import polars as pl

#: Trimmed from both ends of a unit (the same set as `btrim(unit, E' \t\n\r')` in SQL).
WHITESPACE = " \t\n\r"

#: Spellings matched exactly, case included -> the canonical spelling.
SYMBOLS: dict[str, str] = {
    "C": "°C",
    "°c": "°C",
    "ºC": "°C",  # masculine ordinal indicator, often typed for the degree sign
    "\u2103": "°C",  # ℃ DEGREE CELSIUS
    "F": "°F",
    "°f": "°F",
    "ºF": "°F",
    "\u2109": "°F",  # ℉ DEGREE FAHRENHEIT
    "°K": "K",
    "\u212a": "K",  # KELVIN SIGN
}

#: ASCII spellings matched in any case (the key is lower case) -> the canonical spelling.
WORDS: dict[str, str] = {
    "degc": "°C",
    "deg c": "°C",
    "celsius": "°C",
    "degrees celsius": "°C",
    "degf": "°F",
    "deg f": "°F",
    "fahrenheit": "°F",
    "degrees fahrenheit": "°F",
    "kelvin": "K",
    "pct": "%",
    "percent": "%",
    "%rh": "%RH",
    "% rh": "%RH",
    "rh": "%RH",
}


def canonical_unit(unit: str | None) -> str | None:
    """The canonical spelling of `unit` (None stays None: an event without a unit)."""
    if unit is None:
        return None
    text = unit.strip(WHITESPACE)
    if text in SYMBOLS:
        return SYMBOLS[text]
    if text.isascii():
        return WORDS.get(text.lower(), text)
    return text


def canonical_unit_expr(column: str) -> pl.Expr:
    """`canonical_unit` over a string column, named as the column (nulls stay null)."""
    text = pl.col(column).str.strip_chars(WHITESPACE)
    lowered = text.str.to_lowercase()
    ascii_only = ~text.str.contains(r"[^\x00-\x7F]")
    return (
        pl.when(text.is_in(list(SYMBOLS)))
        .then(text.replace(SYMBOLS))
        .when(ascii_only & lowered.is_in(list(WORDS)))
        .then(lowered.replace(WORDS))
        .otherwise(text)
        .alias(column)
    )


def with_canonical_units(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """`frame` with `column` spelled as `canonical_unit_expr` spells it, which is computed once per distinct
    spelling (a batch has a handful) rather than once per row."""
    spellings = frame.select(pl.col(column).unique().drop_nulls())
    canonical = spellings.select(canonical_unit_expr(column))[column]
    return frame.with_columns(pl.col(column).replace(spellings[column], canonical))
