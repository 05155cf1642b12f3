"""The micro-window sensor: one run per closed arrival window, given its exact range as the run's window."""

import json
from collections.abc import Callable

import psycopg
from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from dagster_project.defs.ingest.jobs import MICRO_BATCH_JOB
from dagster_project.defs.resources import BatchPolicyResource, DatabaseResource, RedisStreamsResource
from dagster_project.defs.run_window import configured_range, run_config_for
from dagster_project.lib.storage.batches import landed_ranges, last_processed_end
from dagster_project.lib.windows import (
    HOUR_MS,
    Window,
    choose_windows,
    closed_windows,
    defer_while_busy,
    floor_to,
    heal_until,
    held_range,
    windows_to_heal,
)
from iot_core.db_errors import postgres_refusal
from iot_core.redact import redact_text
from iot_core.redis_client import REDIS_UNAVAILABLE
from iot_core.streams import utc_from_ms

#: The two tags of a micro-batch run (readers: compaction, `iot-etl up`'s window lines, status, benchmarks).
WINDOW_TAG = "iot/window"
KIND_TAG = "iot/kind"
#: Unfinished micro-batch runs at which windows of the open hour wait, to go later as one larger run.
MAX_RUNS_IN_FLIGHT = 1
_UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def runs_in_flight(context: SensorEvaluationContext) -> int:
    return context.instance.get_runs_count(RunsFilter(job_name=MICRO_BATCH_JOB, statuses=_UNFINISHED))


def held_ranges(context: SensorEvaluationContext) -> list[tuple[int, int]]:
    """The arrival ranges that queued or started runs of any job hold (`held_range`): no heal runs them."""
    runs = context.instance.get_runs(RunsFilter(statuses=_UNFINISHED))
    return [
        held for run in runs if (held := held_range(configured_range(run.run_config), run.tags)) is not None
    ]


#: Errors that mean a service is away for now (not a bug): the tick is skipped with one line.
UNREACHABLE: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, psycopg.OperationalError)


def run_request(window: Window, kind: str | None = None, attempt_ms: int = 0) -> RunRequest:
    return RunRequest(
        run_key=f"heal-{window.run_key}-{attempt_ms}" if attempt_ms else window.run_key,
        partition_key=window.partition_key,
        run_config=run_config_for(window),
        tags=run_tags(window, kind),
    )


def run_tags(window: Window, kind: str | None = None) -> dict[str, str]:
    """The tags a person reads in the runs list: the window and the kind of run (`micro`, `hour`, `heal`).
    The range itself reaches the assets and checks as the run's window (`run_window`), not by the tags."""
    return {
        WINDOW_TAG: window.short_label,
        KIND_TAG: kind or ("hour" if window.whole_hour else "micro"),
    }


def initial_cursor(
    redis: RedisStreamsResource, database: DatabaseResource, now_ms: int, window_ms: int
) -> int:
    """Where a sensor without a cursor starts: after the last range that was archived and decoded, else
    at the first stream entry, else at the current window; never past what has closed."""
    with database.connect() as conn:
        end_ms = last_processed_end(conn)
    if end_ms is None:
        end_ms = redis.first_entry_ms()
    return floor_to(min(end_ms if end_ms is not None else now_ms, now_ms), window_ms)


def heal_requests(
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
    cursor_ms: int,
    now_ms: int,
    tried: dict[str, int],
    held: Callable[[], list[tuple[int, int]]],
) -> tuple[list[RunRequest], dict[str, int]]:
    """Runs for closed windows behind the cursor that hold entries but were never archived and decoded
    (their runs failed for good, or died) and that no unfinished run holds (`held` reads those): the
    pipeline heals itself after an outage."""
    lookback_ms = floor_to(now_ms - policy.heal_lookback_hours * HOUR_MS, policy.window_ms)
    heal_until_ms = heal_until(
        cursor_ms, now_ms, policy.heal_after_ms, policy.window_grace_ms, policy.window_ms
    )
    tried = {key: at for key, at in tried.items() if at > lookback_ms}
    if heal_until_ms <= lookback_ms:
        return [], tried
    with database.connect() as conn:
        processed = landed_ranges(conn, utc_from_ms(lookback_ms), utc_from_ms(heal_until_ms), decoded=True)
    windows = [
        window
        for window in windows_to_heal(
            processed, held(), lookback_ms, heal_until_ms, tried, now_ms, policy.heal_after_ms
        )
        if redis.has_entries(window)
    ][: policy.max_runs_per_tick]
    tried.update({window.run_key: now_ms for window in windows})
    return [run_request(window, "heal", now_ms) for window in windows], tried


def evaluate(
    context: SensorEvaluationContext,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
) -> SensorResult:
    """One tick: heal runs for ranges never processed, then runs for the windows closed since the cursor."""
    now_ms = redis.now_ms()
    state = json.loads(context.cursor) if context.cursor else {}
    cursor = state.get("next_ms")
    if cursor is None:
        cursor = initial_cursor(redis, database, now_ms, policy.window_ms)
    heals, tried = heal_requests(
        redis, database, policy, cursor, now_ms, state.get("heal", {}), lambda: held_ranges(context)
    )
    # windows that close within the lead: their runs land them as they close
    windows = closed_windows(
        cursor,
        now_ms + policy.lead_ms,
        policy.window_ms,
        policy.window_grace_ms,
        policy.max_runs_per_tick,
    )
    closed = len(windows)
    if windows:
        windows = defer_while_busy(windows, runs_in_flight(context), MAX_RUNS_IN_FLIGHT)
    if not windows and not heals:
        reason = (
            f"{closed} closed window(s) wait for the run in flight; one run takes them later"
            if closed
            else "no window has closed yet"
        )
        return SensorResult(
            skip_reason=SkipReason(reason),
            cursor=json.dumps({"next_ms": cursor, "heal": tried}),
        )
    if not windows:
        return SensorResult(run_requests=heals, cursor=json.dumps({"next_ms": cursor, "heal": tried}))
    chosen, next_ms = choose_windows(
        windows,
        cursor,
        now_ms,
        policy.window_grace_ms,
        policy.skip_empty_windows,
        redis.has_entries,
    )
    return SensorResult(
        run_requests=[*heals, *(run_request(window) for window in chosen)],
        cursor=json.dumps({"next_ms": next_ms, "heal": tried}),
    )


def build_micro_window_sensor(interval_s: int) -> SensorDefinition:
    @sensor(
        name="micro_window_sensor",
        job_name=MICRO_BATCH_JOB,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests a run per closed micro-window of arrival time (a whole hour when catching "
        "up). Its cursor is the start of the next window to request.",
    )
    def micro_window_sensor(
        context: SensorEvaluationContext,
        redis: RedisStreamsResource,
        database: DatabaseResource,
        policy: BatchPolicyResource,
    ) -> SensorResult:
        try:
            return evaluate(context, redis, database, policy)
        except UNREACHABLE as exc:  # one line per tick, not a traceback; the cursor stays
            service = "the database" if isinstance(exc, psycopg.Error) else "Redis"
            detail = redact_text((str(exc).strip().splitlines() or [type(exc).__name__])[0])
            refusal = None if service == "Redis" else postgres_refusal(detail, "IOT_DATABASE_URL")
            problem = f"refused the connection ({refusal.said})" if refusal else f"is unreachable ({detail})"
            return SensorResult(
                skip_reason=SkipReason(f"{service} {problem}; trying again next tick"),
                cursor=context.cursor,
            )

    return micro_window_sensor
