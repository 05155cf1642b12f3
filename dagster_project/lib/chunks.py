"""Compressed history on TimescaleDB that a run's look-ups by raw id skip, and chunks that writes into
compressed history left partly uncompressed (no Dagster).

A run finds its range's fact rows by raw id (`raw_ids`). A hypertable is chunked by time, and a compressed
chunk keeps no min/max of `raw_id`, so without more every compressed chunk was decompressed and filtered by
every look-up, and a run's work grew with every day of history: with 365 compressed day chunks of 20,000
readings its checks took 878 ms and its rollup refresh 2.9 s, against 8-13 ms and 39-41 ms with none
(`bench.compressed_history`). TimescaleDB's chunk skipping (`enable_chunk_skipping`, 2.16 on) records a
chunk's raw-id range when the chunk is compressed, and a look-up then leaves out every chunk whose range
lies outside its own (20 ms and 76 ms with the 365 chunks). It takes the setting
`timescaledb.enable_chunk_skipping` (off by default, settable per database, role or session): on when a
chunk is compressed, for its range to be recorded, and on where the look-up is planned, for the range to be
used. `db migrate` turns it on for the database (`ALTER DATABASE ... SET`, as the database's owner) and
has every hypertable with a `raw_id` column tracked; chunks compressed before that keep no range.

A write into a compressed chunk (a late reading, a backfill of old hours) leaves the chunk partial: its
new rows uncompressed beside the compressed ones, and its raw-id range no longer trusted, so every
look-up reads the chunk again. `recompress_partial` compresses such chunks again (only the segments that
were written to), which records their range anew.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dagster_project.lib.retention import has_timescaledb

#: TimescaleDB's setting for chunk skipping, and the column the look-ups select by.
SKIPPING = "timescaledb.enable_chunk_skipping"
KEY = "raw_id"
#: `_timescaledb_catalog.chunk.status` bits (TimescaleDB's chunk.h): compressed, and partly so.
COMPRESSED, PARTIAL = 1, 8
#: A chunk's range when none is known (the chunk is read by every look-up).
UNBOUNDED = (-(2**63), 2**63 - 1)
#: The chunks that exist (`i`, the information view, which leaves out the catalog's dropped ones) with their
#: catalog rows (`c`: id, status).
_CHUNKS = """timescaledb_information.chunks i
             JOIN _timescaledb_catalog.chunk c
               ON c.schema_name = i.chunk_schema AND c.table_name = i.chunk_name"""


def skipping_supported(conn: psycopg.Connection) -> bool:
    """Whether the database has TimescaleDB with chunk skipping (2.16 or later)."""
    if not has_timescaledb(conn):
        return False
    row = conn.execute("SELECT to_regprocedure('enable_chunk_skipping(regclass, name, boolean)')").fetchone()
    return bool(row and row[0])


def skipping_on(conn: psycopg.Connection) -> bool:
    """Whether this session uses (and records) chunk ranges: the database's or role's setting, unless the
    session set its own."""
    row = conn.execute("SELECT current_setting(%s, true)", (SKIPPING,)).fetchone()
    return bool(row and row[0] == "on")


def use_skipping(conn: psycopg.Connection) -> None:
    """Turn chunk skipping on for this session where the database has it, so that chunks it compresses
    record their raw-id range whatever the database's setting."""
    if skipping_supported(conn):
        conn.execute(f"SET {SKIPPING} = on")


def raw_id_hypertables(conn: psycopg.Connection) -> list[str]:
    """The hypertables of the current schema that have a `raw_id` column."""
    if not has_timescaledb(conn):
        return []
    rows = conn.execute(
        """SELECT h.hypertable_name FROM timescaledb_information.hypertables h
           JOIN information_schema.columns c
             ON c.table_schema = h.hypertable_schema AND c.table_name = h.hypertable_name
           WHERE h.hypertable_schema = current_schema() AND c.column_name = %s
           ORDER BY 1""",
        (KEY,),
    ).fetchall()
    return [name for (name,) in rows]


def _tracked(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute(
        """SELECT 1 FROM _timescaledb_catalog.chunk_column_stats s
           JOIN _timescaledb_catalog.hypertable h ON h.id = s.hypertable_id
           WHERE h.schema_name = current_schema() AND h.table_name = %s AND s.column_name = %s
             AND s.chunk_id IS NULL""",
        (table, KEY),
    ).fetchone()
    return row is not None


def _database_setting_on(conn: psycopg.Connection) -> bool:
    """Whether the database itself (for every role) has chunk skipping on."""
    row = conn.execute(
        """SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
           WHERE d.datname = current_database() AND s.setrole = 0
             AND %s = ANY(s.setconfig)""",
        (f"{SKIPPING}=on",),
    ).fetchone()
    return row is not None


def _turn_on(conn: psycopg.Connection) -> sql.Composed:
    (database,) = conn.execute("SELECT current_database()").fetchone() or ("",)
    return sql.SQL("ALTER DATABASE {} SET " + SKIPPING + " = on").format(sql.Identifier(database))


def turn_on_instructions(conn: psycopg.Connection) -> str:
    """What the database's owner runs to turn chunk skipping on for it, then how to record the ranges."""
    return f"{_turn_on(conn).as_string(conn)} (as the database's owner, connected to it; new sessions use it)"


def enable_raw_id_skipping(conn: psycopg.Connection) -> list[str]:
    """Turn chunk skipping on for the database and track `raw_id` on every hypertable that has it; one line
    per change, or per refusal (the database's setting takes its owner, a table's tracking the table's):
    what was refused is left as it was and the rest done. `conn` is in autocommit mode; the changes are
    one transaction. Nothing without TimescaleDB 2.16 or later."""
    if not skipping_supported(conn):
        return []
    lines: list[str] = []
    with conn.transaction():
        if not _database_setting_on(conn):
            try:
                with conn.transaction():
                    conn.execute(_turn_on(conn))
                lines.append(f"chunk skipping: on for this database ({SKIPPING})")
            except psycopg.errors.InsufficientPrivilege:
                lines.append(
                    f"chunk skipping: could not turn it on for this database ({SKIPPING}; only its owner "
                    "may): look-ups by raw id read every compressed chunk; run " + turn_on_instructions(conn)
                )
        conn.execute(f"SET LOCAL {SKIPPING} = on")
        for table in raw_id_hypertables(conn):
            if _tracked(conn, table):
                continue
            try:
                with conn.transaction():
                    conn.execute("SELECT enable_chunk_skipping(%s::regclass, %s)", (table, KEY))
            except psycopg.errors.InsufficientPrivilege:
                lines.append(f"{table}: raw ids not tracked (only the table's owner may turn it on)")
                continue
            unranged = skipping_state(conn, table).without_range
            lines.append(
                f"{table}: compressed chunks keep their raw-id range (chunk skipping)"
                + (
                    f"; {unranged} chunk(s) compressed before keep none (see docs/upgrading.md)"
                    if unranged
                    else ""
                )
            )
    return lines


@dataclass(frozen=True, slots=True)
class SkippingState:
    table: str
    tracked: bool  # raw-id ranges are recorded as chunks are compressed
    compressed: int  # compressed chunks
    without_range: int  # of them, those every look-up by raw id reads: no range, or written to since
    partial: int  # of them, those written to since they were compressed


def skipping_state(conn: psycopg.Connection, table: str) -> SkippingState:
    """How many of the hypertable's compressed chunks a look-up by raw id can leave out."""
    row = conn.execute(
        f"""SELECT count(*),
                  count(*) FILTER (WHERE s.id IS NULL OR NOT s.valid
                                   OR (s.range_start = %(lo)s AND s.range_end = %(hi)s)),
                  count(*) FILTER (WHERE c.status & %(partial)s <> 0)
           FROM {_CHUNKS}
           LEFT JOIN _timescaledb_catalog.chunk_column_stats s
                  ON s.chunk_id = c.id AND s.column_name = %(key)s
           WHERE i.hypertable_schema = current_schema() AND i.hypertable_name = %(table)s
             AND c.status & %(compressed)s <> 0""",
        {
            "lo": UNBOUNDED[0],
            "hi": UNBOUNDED[1],
            "partial": PARTIAL,
            "compressed": COMPRESSED,
            "key": KEY,
            "table": table,
        },
    ).fetchone()
    assert row is not None
    return SkippingState(table, _tracked(conn, table), *map(int, row))


@dataclass(frozen=True, slots=True)
class Recompressed:
    table: str
    chunks: list[str]
    done: bool = True  # False: the deadline passed with partial chunks left


def partial_chunks(conn: psycopg.Connection, table: str) -> list[str]:
    """The hypertable's chunks that writes into compressed history left partly uncompressed, oldest first."""
    rows = conn.execute(
        f"""SELECT format('%%I.%%I', c.schema_name, c.table_name) FROM {_CHUNKS}
           WHERE i.hypertable_schema = current_schema() AND i.hypertable_name = %s AND c.status & %s <> 0
           ORDER BY i.range_start""",
        (table, PARTIAL),
    ).fetchall()
    return [name for (name,) in rows]


def recompress_partial(
    conn: psycopg.Connection, tables: list[str], deadline: float | None = None
) -> list[Recompressed]:
    """Compress again the chunks of `tables` (hypertables; others are left out) that a write into
    compressed history left partial: TimescaleDB compresses only the segments written to, and records
    the chunk's raw-id range anew, so look-ups by raw id skip it again. Until then every look-up
    decompresses it. Chunk by chunk, until `deadline` (time.monotonic) passes; `conn` is in autocommit
    mode (each chunk its own transaction) and owns the tables."""
    if not has_timescaledb(conn):
        return []
    use_skipping(conn)
    done: list[Recompressed] = []
    for table in tables:
        chunks = partial_chunks(conn, table)
        if not chunks:
            continue
        compressed: list[str] = []
        for chunk in chunks:
            if deadline is not None and time.monotonic() > deadline:
                done.append(Recompressed(table, compressed, done=False))
                break
            conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))
            compressed.append(chunk)
        else:
            done.append(Recompressed(table, compressed))
    return done
