"""Stream entries become raw rows; entries our listener did not write are kept and later rejected."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl

from dagster_project.lib.raw_entries import raw_row
from iot_core.formats.batch import decode_batch
from iot_core.formats.f2_messages import F2Catalog


def test_listener_entry_is_archived_untouched() -> None:
    fields = {
        b"topic": b"devices/a/t",
        b"payload": b"\xff\x00",
        b"qos": b"1",
        b"retain": b"1",
        b"rx_us": b"17",
    }
    row = raw_row("iot:raw", b"1795392000123-4", fields)
    assert row == (
        datetime(2026, 11, 23, 0, 0, 0, 123000, tzinfo=UTC),
        "iot:raw",
        1795392000123,
        4,
        "devices/a/t",
        b"\xff\x00",
        1,
        True,
        17,
        False,
    )
    # a message the broker sent again
    assert raw_row("iot:raw", b"1795392000123-5", {**fields, b"dup": b"1"})[-1] is True


def test_foreign_entry_is_kept_with_its_fields_and_rejected_with_a_reason() -> None:
    row = raw_row("iot:raw", "1795392000123-0", {b"value": b"\xff", b"qos": b"x"})
    assert row[4] == "" and row[6] == 0 and row[8] == 1795392000123000
    assert json.loads(row[5]) == {"qos": "x", "value": "base64:/w=="}
    raw = pl.DataFrame(
        {"raw_id": [1], "topic": [row[4]], "payload": [row[5]], "rx_us": [row[8]]},
        schema={"raw_id": pl.Int64, "topic": pl.String, "payload": pl.Binary, "rx_us": pl.Int64},
    )
    batch = decode_batch(raw, F2Catalog())
    assert batch.rejected.select("raw_id", "stage", "reason").rows() == [(1, "topic", "malformed_entry")]


class ExplodingCatalog(F2Catalog):
    def knows(self, mac: str) -> bool:
        raise RuntimeError("metadata bug")


def test_a_decoder_bug_rejects_that_message_and_the_batch_goes_on() -> None:
    raw = pl.DataFrame(
        {
            "raw_id": [1, 2],
            "topic": ["stat/f2-aabbccddee01/door-sensors", "devices/a/t"],
            "payload": [b'{"door-1": true}', b"1"],
            "rx_us": [1, 2],
        },
        schema={"raw_id": pl.Int64, "topic": pl.String, "payload": pl.Binary, "rx_us": pl.Int64},
    )
    batch = decode_batch(raw, ExplodingCatalog())
    assert batch.rejected.select("raw_id", "reason").rows() == [(1, "decoder_error")]
    assert "RuntimeError: metadata bug" in batch.rejected["detail"][0]
    assert batch.measurements["raw_id"].to_list() == [2]


def test_unstorable_topics_are_escaped_recoverably_and_rejected_with_their_reason() -> None:
    from iot_core.formats.topics import unescape_topic

    cases = {
        b"devices/a\x00b/temperature": "nul_character",
        b"devices/\xff/temperature": "not_utf8",
        b"#base64:ZGV2aWNlcy9hL3Q=": "unknown_topic",  # a foreign entry spelling the mark itself
    }
    rows = [
        raw_row("iot:raw", f"1795392000123-{i}", {b"topic": t, b"payload": b"1"}) for i, t in enumerate(cases)
    ]
    for row, topic in zip(rows, cases, strict=True):
        assert "\x00" not in row[4] and unescape_topic(row[4]) == topic
    raw = pl.DataFrame(
        {"raw_id": [1, 2, 3], "topic": [r[4] for r in rows], "payload": [b"1"] * 3, "rx_us": [1, 2, 3]},
        schema={"raw_id": pl.Int64, "topic": pl.String, "payload": pl.Binary, "rx_us": pl.Int64},
    )
    batch = decode_batch(raw, F2Catalog())
    assert batch.measurements.is_empty()
    assert batch.rejected.select("raw_id", "stage", "reason").rows() == [
        (i + 1, "topic", reason) for i, reason in enumerate(cases.values())
    ]
    assert raw_row("iot:raw", "1-0", {b"topic": b"devices/a/t", b"payload": b"1"})[4] == "devices/a/t"
