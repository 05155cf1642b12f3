"""Comparing the column-wise decoders with the per-message path, the definition."""

from __future__ import annotations

import polars as pl

from iot_core.formats.batch import DecodedBatch, DecodeOptions, decode_batch
from iot_core.formats.columns import POSITION
from iot_core.formats.f2_messages import F2Catalog
from iot_core.rows import DECODE_INPUT

RX_US = 1_736_937_000_000_000  # 2025-01-15T10:30:00Z


def raw_frame(messages: list[tuple[str, bytes]], rx_us: list[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "raw_id": list(range(1, len(messages) + 1)),
            "topic": [topic for topic, _ in messages],
            "payload": [payload for _, payload in messages],
            "rx_us": rx_us or [RX_US + 7 * i for i in range(len(messages))],
        },
        schema=DECODE_INPUT.without("arrived_at").schema,
    )


def exact(frame: pl.DataFrame) -> list[tuple]:
    """Rows with floats as hex, so that -0.0 and 0.0 (and any last-bit difference) tell apart."""
    return [
        tuple(value.hex() if isinstance(value, float) else value for value in row) for row in frame.rows()
    ]


def assert_decided_like_reference(
    frame: pl.DataFrame,
    kind: str,
    rows: pl.DataFrame,
    counts: pl.DataFrame,
    catalog: F2Catalog,
    options: DecodeOptions,
) -> int:
    """A column-wise decoder's `rows` (of `kind`: "measurements" or "events", with POSITION) and
    `counts` (POSITION, raw_id, elements) are, for every message it decided, exactly what the
    per-message path makes of it: the same rows in the same order, the same element count, and no
    rejection. Returns how many messages it decided."""
    reference = decode_batch(frame, catalog, options, vectorised=False)
    decided = counts["raw_id"].implode()
    mine = pl.col("raw_id").is_in(decided)
    assert reference.rejected.filter(mine).is_empty(), "a decided message is rejected by the reference"
    other = "events" if kind == "measurements" else "measurements"
    assert getattr(reference, other).filter(mine).is_empty()
    assert rows.schema == {POSITION: pl.UInt32, **getattr(reference, kind).schema}
    got = rows.sort(POSITION, "item", maintain_order=True).drop(POSITION)
    assert exact(got) == exact(getattr(reference, kind).filter(mine))
    assert counts.sort(POSITION).select("raw_id", "elements").rows() == reference.elements.filter(mine).rows()
    assert counts[POSITION].is_unique().all()
    return counts.height


def assert_same_both_ways(
    frame: pl.DataFrame, catalog: F2Catalog, options: DecodeOptions | None = None
) -> DecodedBatch:
    """`decode_batch` gives exactly the same frames with and without its column-wise paths (taken
    whatever the number of candidates)."""
    slow = decode_batch(frame, catalog, options, vectorised=False)
    fast = decode_batch(frame, catalog, options, column_wise_min_rows=1)
    for name in ("measurements", "events", "rejected", "elements"):
        a, b = getattr(slow, name), getattr(fast, name)
        assert a.schema == b.schema, name
        assert exact(a) == exact(b), name
    return fast
