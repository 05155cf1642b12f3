"""What a micro-batch run's checks and rollup refresh cost on TimescaleDB as compressed history grows.

    .venv/bin/python -m bench.compressed_history [--server postgresql://postgres@127.0.0.1:55433]
        [--days 30,180,365] [--rows-per-day 20000] [--recent 60000] [--repeat 5]

In a scratch database on a TimescaleDB server (migrated as `db migrate` does, so chunk skipping by raw id
is on for it): `--recent` plain readings arriving over the 50 minutes from two hours ago, each with its
raw message (one uncompressed chunk, as today's data is), then history added a day chunk at a time
before the compression horizon (from eight days back), `--rows-per-day` readings per day over 8 devices
and 2 metrics with raw ids below the recent ones (older data, lower ids), every day chunk compressed as
the compression policy would. At 0 days and at each of `--days`, a run's per-range work over one minute
of the recent readings, each the median of `--repeat`:

- checks: hour counts, reconciliation and plausibility (`hour_counts`, `reconcile`, `implausible_readings`);
- rollups: `refresh_rollups` as the `hourly_rollups` asset runs it, after the range's readings were
  written again (the run's own write, which invalidates their hour in the continuous aggregate).

Each is measured with chunk skipping on (the database's setting) and off (a session with
`timescaledb.enable_chunk_skipping=off`: how every look-up by raw id ran before, the baseline), in the
same run. Then the cost of a backfill into compressed history: an hour of readings upserted into the
oldest day's compressed chunk, the checks while that chunk is partial, `recompress_partial`, and the
checks after. History is in `measurements` only: the checks read `raw_messages` by arrival time, whose
chunks TimescaleDB leaves out by time.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from dagster_project.lib.chunks import recompress_partial, skipping_supported
from dagster_project.lib.hour_summaries import hour_counts
from dagster_project.lib.rollups import refresh_rollups
from dagster_project.lib.storage.quality import implausible_readings, reconcile
from iot_etl.migrate import apply_migrations, ensure_database

DAY, MINUTE = timedelta(days=1), timedelta(minutes=1)
SPACING = timedelta(milliseconds=50)
HISTORY_FROM = 8  # days back: the newest compressed day (compression after 7 days)
DEVICES, METRICS = 8, 2
COLUMNS = "ts, device_id, metric_id, value_num, arrived_at, raw_id, batch_id"
#: A device and a metric of the `devices` and `metrics` ids (query parameters) by the series' `n`.
DEVICE_OF_N, METRIC_OF_N = "(%(d)s::int[])[1 + n %% %(nd)s]", "(%(m)s::int[])[1 + n %% 2]"


def setup(url: str, recent: int, start: datetime) -> tuple[list[int], list[int]]:
    """Devices and metrics, and `recent` readings with their raw messages arriving from `start`."""
    with psycopg.connect(url) as conn:
        devices = [
            conn.execute(
                "INSERT INTO devices (device_key, kind) VALUES (%s, 'plain') RETURNING device_id",
                (f"bench-{n}",),
            ).fetchone()[0]  # type: ignore[index]
            for n in range(DEVICES)
        ]
        metrics = [
            conn.execute(
                """INSERT INTO metrics (name, unit) VALUES (%s, %s) ON CONFLICT (name, unit)
                   DO UPDATE SET name = excluded.name RETURNING metric_id""",
                pair,
            ).fetchone()[0]  # type: ignore[index]
            for pair in (("humidity", "%"), ("temperature", "°C"))
        ]
        (batch_id,) = conn.execute(
            """INSERT INTO batches (run_id, partition_key, range_start, range_end, start_id, end_id, streams,
                                    decoder_version)
               VALUES ('bench', 'bench', %s, %s, '0-0', '0-0', '{bench}', 'bench') RETURNING batch_id""",
            (start, start + recent * SPACING),
        ).fetchone()  # type: ignore[misc]
        conn.execute(
            """INSERT INTO raw_messages (arrived_at, stream, entry_ms, entry_seq, topic, payload, qos, retain,
                                         rx_us, batch_id)
               SELECT %(start)s + n * %(spacing)s, 'bench', n, 0, 'devices/bench/humidity', '1', 1, false, 0,
                      %(b)s
               FROM generate_series(0, %(n)s - 1) AS n ORDER BY n""",
            {"start": start, "spacing": SPACING, "n": recent, "b": batch_id},
        )
        conn.execute(
            """INSERT INTO measurements (ts, device_id, metric_id, value_num, arrived_at, raw_id, batch_id)
               SELECT arrived_at, (%(d)s::int[])[1 + raw_id %% %(nd)s], (%(m)s::int[])[1 + raw_id %% 2],
                      raw_id %% 100, arrived_at, raw_id, batch_id
               FROM raw_messages""",
            {"d": devices, "nd": DEVICES, "m": metrics},
        )
    return devices, metrics


def add_history(url: str, days: range, rows_per_day: int, devices: list[int], metrics: list[int]) -> None:
    """`rows_per_day` readings in each day `days` (days back from HISTORY_FROM), raw ids below 0 and lower
    the older the day, each day's chunk compressed (chunk skipping on: its raw-id range is recorded)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    with psycopg.connect(url, autocommit=True) as conn:
        for back in days:
            day = today - (HISTORY_FROM + back) * DAY
            conn.execute(
                f"""INSERT INTO measurements ({COLUMNS})
                   SELECT %(day)s + n * %(step)s, {DEVICE_OF_N}, {METRIC_OF_N},
                          n %% 100, %(day)s + n * %(step)s, -((%(back)s + 1)::bigint * %(r)s) + n, 0
                   FROM generate_series(0, %(r)s - 1) AS n""",
                {
                    "day": day,
                    "step": DAY / rows_per_day,
                    "d": devices,
                    "nd": DEVICES,
                    "m": metrics,
                    "back": back,
                    "r": rows_per_day,
                },
            )
        conn.execute("SET timescaledb.enable_chunk_skipping = on")
        conn.execute(
            """SELECT compress_chunk(c, if_not_compressed => true)
               FROM show_chunks('measurements', older_than => %s) c""",
            (today - (HISTORY_FROM - 1) * DAY,),
        )
        conn.execute("ANALYZE measurements")


def median_ms(call: Callable[[], object], repeat: int, before: Callable[[], object] = lambda: None) -> float:
    call()  # warm: plans, caches
    times = []
    for _ in range(repeat):
        before()
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def per_run(url: str, start: datetime, end: datetime, repeat: int, skipping: bool) -> tuple[float, float]:
    """(checks ms, rollups ms) of one run's range [start, end)."""
    options = "" if skipping else "-c timescaledb.enable_chunk_skipping=off"
    with (
        psycopg.connect(url, autocommit=True, options=options) as conn,
        psycopg.connect(url, autocommit=True, options=options) as writer,
    ):

        def checks() -> None:
            hour_counts(conn, start, end)
            reconcile(conn, start, end)
            implausible_readings(conn, start, end)

        def rewrite() -> None:  # the run's own write, which the refresh then picks up
            writer.execute(
                """UPDATE measurements SET value_num = value_num
                   WHERE ts >= %s AND ts < %s AND raw_id > 0""",
                (start, end),
            )

        return (
            median_ms(checks, repeat),
            median_ms(lambda: refresh_rollups(conn, start, end), repeat, before=rewrite),
        )


def backfill(
    url: str, oldest: datetime, devices: list[int], metrics: list[int], repeat: int, run: tuple
) -> list[str]:
    """An hour of readings (one a second) upserted into the oldest compressed day, as a backfill or a late
    device writes them: what the write, the checks meanwhile, and the recompression cost."""
    start, end = run
    with psycopg.connect(url, autocommit=True) as conn:
        (top,) = conn.execute("SELECT max(raw_id) FROM measurements").fetchone()  # type: ignore[misc]
        began = time.perf_counter()
        conn.execute(
            f"""INSERT INTO measurements AS m ({COLUMNS})
               SELECT %(hour)s + n * interval '1 second' + interval '1 millisecond',
                      {DEVICE_OF_N}, {METRIC_OF_N}, 1, now(), %(top)s + 1 + n, 0
               FROM generate_series(0, 3599) AS n
               ON CONFLICT (device_id, metric_id, ts) DO UPDATE SET value_num = excluded.value_num
               WHERE m.raw_id = excluded.raw_id""",
            {"hour": oldest + timedelta(hours=12), "d": devices, "nd": DEVICES, "m": metrics, "top": top},
        )
        write_ms = (time.perf_counter() - began) * 1000
        partial_ms = per_run(url, start, end, repeat, True)[0]
        began = time.perf_counter()
        done = recompress_partial(conn, ["measurements"])
        recompress_ms = (time.perf_counter() - began) * 1000
        after_ms = per_run(url, start, end, repeat, True)[0]
    chunks = sum(len(r.chunks) for r in done)
    return [
        f"backfill of 3,600 readings into the oldest compressed day: upsert {write_ms:,.0f} ms",
        f"  checks while its chunk is partial (read whole by every look-up) {partial_ms:,.1f} ms",
        f"  recompress_partial ({chunks} chunk) {recompress_ms:,.0f} ms; checks after {after_ms:,.1f} ms",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:55433")
    parser.add_argument("--days", default="30,180,365")
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--recent", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = sorted({int(d) for d in args.days.split(",")})
    db = f"iot_bench_{uuid.uuid4().hex[:8]}"
    url = f"{args.server}/{db}"
    ensure_database(url)
    try:
        apply_migrations(url)
        with psycopg.connect(url) as conn:
            if not skipping_supported(conn):
                raise SystemExit(f"{args.server} has no TimescaleDB 2.16 or later: nothing to measure")
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        devices, metrics = setup(url, args.recent, start)
        middle = start + args.recent * SPACING / 2
        run = (middle.replace(second=0, microsecond=0), middle.replace(second=0, microsecond=0) + MINUTE)
        print(
            f"per-run work over 1 minute ({int(MINUTE / SPACING):,} readings) of "
            f"{args.recent:,} recent readings; history {args.rows_per_day:,} readings a day; "
            f"median of {args.repeat}, ms\n"
        )
        print(f"{'history':>8} {'chunks':>7} {'rows':>11} | {'checks':>8} {'rollups':>8} | "
              f"{'checks, skipping off':>20} {'rollups, off':>12}")  # fmt: skip
        added = 0
        for days in [0, *sizes]:
            add_history(url, range(added, days), args.rows_per_day, devices, metrics)
            added = days
            on = per_run(url, *run, args.repeat, True)
            off = per_run(url, *run, args.repeat, False)
            with psycopg.connect(url) as conn:
                (rows,) = conn.execute("SELECT count(*) FROM measurements").fetchone()  # type: ignore[misc]
            print(f"{days:>5} d {days:>7} {rows:>11,} | {on[0]:>8,.1f} {on[1]:>8,.1f} | "
                  f"{off[0]:>20,.1f} {off[1]:>12,.1f}", flush=True)  # fmt: skip
        if sizes:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            oldest = today - (HISTORY_FROM + sizes[-1] - 1) * DAY
            print()
            print("\n".join(backfill(url, oldest, devices, metrics, args.repeat, run)))
    finally:
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
