"""One spelling per unit: the alias table, its case rule, and the polars expression that applies it."""

from __future__ import annotations

import polars as pl
import pytest

from iot_core.formats.units import SYMBOLS, WORDS, canonical_unit, canonical_unit_expr, with_canonical_units
from tests.support.unit_spellings import SPELLINGS


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("C", "°C"),
        ("°C", "°C"),
        ("degC", "°C"),
        ("deg C", "°C"),
        ("DEGC", "°C"),
        ("Celsius", "°C"),
        ("\u2103", "°C"),
        ("ºC", "°C"),
        (" °C ", "°C"),
        ("F", "°F"),
        ("degF", "°F"),
        ("K", "K"),
        ("kelvin", "K"),
        ("\u212a", "K"),
        ("pct", "%"),
        ("Percent", "%"),
        ("%rh", "%RH"),
        ("RH", "%RH"),
        ("%", "%"),
        ("hPa", "hPa"),
        ("Pa", "Pa"),
        ("kPa", "kPa"),
        ("c", "c"),  # symbols are case-sensitive: a lone c is no spelling of °C
        ("k", "k"),
        ("", ""),
        (None, None),
    ],
)
def test_each_spelling_has_one_canonical_form(sent: str | None, stored: str | None) -> None:
    assert canonical_unit(sent) == stored


def test_canonical_spellings_map_to_themselves() -> None:
    for canonical in {*SYMBOLS.values(), *WORDS.values()}:
        assert canonical_unit(canonical) == canonical


def test_the_polars_expression_spells_as_the_function() -> None:
    frame = pl.DataFrame({"unit": SPELLINGS}, schema={"unit": pl.String})
    spelled = frame.select(canonical_unit_expr("unit"))["unit"].to_list()
    assert spelled == [canonical_unit(u) for u in SPELLINGS]


def test_a_frame_is_spelled_as_the_function_spells_each_row() -> None:
    """Per distinct spelling, mapped back onto every row: repeated spellings and nulls included, other
    columns and the row order kept."""
    units = [*SPELLINGS, *reversed(SPELLINGS), None, " C ", "kPa"]
    frame = pl.DataFrame({"n": range(len(units)), "unit": units}, schema={"n": pl.Int64, "unit": pl.String})
    spelled = with_canonical_units(frame, "unit")
    assert spelled["unit"].to_list() == [canonical_unit(u) for u in units]
    assert spelled["n"].to_list() == list(range(len(units)))
