"""The soak benchmark's verdicts (bench.endurance): flat Redis memory, pruned runs, errors read once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.endurance.logscan import LogScanner
from bench.endurance.summary import MB, redis_memory, run_count, table


def sample(minute: float, memory_mb: float, compactions: int, runs: int = 0) -> dict[str, Any]:
    return {
        "elapsed_s": minute * 60,
        "redis_used_memory": int(memory_mb * MB),
        "stream_lengths": {"soak:raw": 0},
        "runs": runs,
        "micro_runs": runs,
        "runs_failed_seen": 0,
        "raw_messages": 0,
        "measurements": 0,
        "events": 0,
        "rejected": 0,
        "compactions": compactions,
        "runs_deleted": 0,
        "rss_mb": {"listener": 50.0, "dagster-daemon": 100.0, "code-server": 300.0},
        "storage_error_lines": 0,
        "load_avg_1m": 1.0,
    }


def test_redis_memory_is_flat_only_when_the_late_peak_stays_near_the_early_one() -> None:
    # before the first compaction memory may grow as it likes; after it, a saw-tooth under one peak
    sawtooth = [sample(0, 50, 0), *(sample(5 + m, 10 + 5 * (m % 2), 1 + m) for m in range(10))]
    assert redis_memory(sawtooth)["flat"] is True
    assert redis_memory(sawtooth)["first_compaction_mb"] == 10.0
    growing = [sample(5 + m, 10 + 3 * m, 1 + m) for m in range(10)]
    assert redis_memory(growing)["flat"] is False
    assert redis_memory([sample(0, 10, 0), sample(1, 10, 0)])["flat"] is None  # never compacted


def test_run_count_says_whether_pruning_ever_lowered_it() -> None:
    def verdict(runs: tuple[int, ...]) -> tuple[int, int, bool]:
        counted = run_count([sample(m, 1, 0, runs=r) for m, r in enumerate(runs)])
        return counted["max"], counted["end"], counted["ever_fell"]

    assert verdict((1, 5, 9)) == (9, 9, False)
    assert verdict((1, 9, 4, 6)) == (9, 6, True)


def test_table_has_a_line_per_five_minutes_and_the_last_sample() -> None:
    samples = [sample(m / 2, 1, 0) for m in range(25)]  # every 30 s for 12 minutes
    lines = table(samples).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["0.0", "5.0", "10.0", "12.0"]


def test_log_scanner_counts_each_line_once_and_waits_for_a_line_to_end(tmp_path: Path) -> None:
    log = tmp_path / "stack.log"
    log.write_text("ok\nsqlite3.OperationalError: database is locked\nhalf a line: database is")
    scanner = LogScanner((log,))
    assert dict(scanner.scan()) == {"OperationalError": 1, "database is locked": 1}
    assert scanner.lines == 1
    with log.open("a") as more:
        more.write(" locked\nfine\n")
    assert scanner.scan()["database is locked"] == 2
    assert scanner.scan()["database is locked"] == 2  # nothing read twice
    assert scanner.lines == 2


def test_log_scanner_reads_every_log_of_a_folder_and_starts_over_on_a_rotated_one(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "dagster-daemon.log").write_text("database is locked\n")
    scanner = LogScanner((tmp_path / "stack.log", logs))  # the stack's own output may not exist yet
    assert scanner.scan()["database is locked"] == 1
    (logs / "dagster-webserver.log").write_text("x\ndeadlock detected\n")
    (logs / "dagster-daemon.log").write_text("OperationalError\n")  # shorter: a new log after a restart
    assert dict(scanner.scan()) == {"database is locked": 1, "deadlock detected": 1, "OperationalError": 1}
    assert scanner.lines == 3
