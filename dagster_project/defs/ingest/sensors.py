"""The micro-window sensor: one run per closed arrival window, given its exact range as the run's window."""

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from dagster_project.defs.ingest.shards import Scope
from dagster_project.defs.resources import BatchPolicyResource, DatabaseResource, RedisStreamsResource
from dagster_project.defs.run_window import configured_range, configured_shard, run_config_for
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


def runs_in_flight(context: SensorEvaluationContext, scope: Scope | None = None) -> int:
    """Unfinished micro-batch runs (of the scope's shard only, when it is one of several)."""
    tags = scope.tags() if scope is not None else {}
    return context.instance.get_runs_count(
        RunsFilter(job_name=MICRO_BATCH_JOB, statuses=_UNFINISHED, tags=tags or None)
    )


def held_by_run(context: SensorEvaluationContext) -> list[tuple[int | None, tuple[int, int]]]:
    """The arrival ranges that queued or started runs of any job hold (`held_range`), each with the shard
    the run reads (None: every stream): no heal runs them."""
    runs = context.instance.get_runs(RunsFilter(statuses=_UNFINISHED))
    return [
        (configured_shard(run.run_config), held)
        for run in runs
        if (held := held_range(configured_range(run.run_config), run.tags)) is not None
    ]


#: Errors that mean a service is away for now (not a bug): the tick is skipped with one line.
UNREACHABLE: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE, psycopg.OperationalError)


def run_request(
    window: Window, kind: str | None = None, attempt_ms: int = 0, scope: Scope | None = None
) -> RunRequest:
    key = scope.key(window.run_key) if scope is not None else window.run_key
    return RunRequest(
        run_key=f"heal-{key}-{attempt_ms}" if attempt_ms else key,
        partition_key=window.partition_key,
        run_config=run_config_for(window, scope.shard if scope is not None else None),
        tags={**run_tags(window, kind), **(scope.tags() if scope is not None else {})},
    )


def run_tags(window: Window, kind: str | None = None) -> dict[str, str]:
    """The tags a person reads in the runs list: the window and the kind of run (`micro`, `hour`, `heal`).
    The range itself reaches the assets and checks as the run's window (`run_window`), not by the tags."""
    return {
        WINDOW_TAG: window.short_label,
        KIND_TAG: kind or ("hour" if window.whole_hour else "micro"),
    }


def initial_cursor(
    redis: RedisStreamsResource,
    database: DatabaseResource,
    now_ms: int,
    window_ms: int,
    scope: Scope | None = None,
) -> int:
    """Where a sensor without a cursor starts: after the last range that was archived and decoded, else
    at the first stream entry, else at the current window; never past what has closed. With a scope of
    one shard, that shard's."""
    shard = scope.shard if scope is not None else None
    with database.connect() as conn:
        end_ms = last_processed_end(conn, shard)
    if end_ms is None:
        end_ms = scope.first_entry_ms(redis, now_ms) if scope is not None else redis.first_entry_ms()
    return floor_to(min(end_ms if end_ms is not None else now_ms, now_ms), window_ms)


def heal_requests(
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
    cursor_ms: int,
    now_ms: int,
    tried: dict[str, int],
    held: Callable[[], list[tuple[int, int]]],
    scope: Scope | None = None,
) -> tuple[list[RunRequest], dict[str, int]]:
    """Runs for closed windows behind the cursor that hold entries but were never archived and decoded
    (their runs failed for good, or died) and that no unfinished run holds (`held` reads those): the
    pipeline heals itself after an outage. With a scope of one shard, that shard's windows."""
    lookback_ms = floor_to(now_ms - policy.heal_lookback_hours * HOUR_MS, policy.window_ms)
    heal_until_ms = heal_until(
        cursor_ms, now_ms, policy.heal_after_ms, policy.window_grace_ms, policy.window_ms
    )
    tried = {key: at for key, at in tried.items() if at > lookback_ms}
    if heal_until_ms <= lookback_ms:
        return [], tried
    shard = scope.shard if scope is not None else None
    with database.connect() as conn:
        processed = landed_ranges(
            conn, utc_from_ms(lookback_ms), utc_from_ms(heal_until_ms), decoded=True, shard=shard
        )
    windows = [
        window
        for window in windows_to_heal(
            processed, held(), lookback_ms, heal_until_ms, tried, now_ms, policy.heal_after_ms
        )
        if (scope.has_entries(redis, window) if scope is not None else redis.has_entries(window))
    ][: policy.max_runs_per_tick]
    tried.update({window.run_key: now_ms for window in windows})
    return [run_request(window, "heal", now_ms, scope) for window in windows], tried


@dataclass(frozen=True, slots=True)
class ScopeTick:
    """What one tick asks for one scope (a shard, or every stream), and that scope's cursor."""

    requests: list[RunRequest]
    state: dict[str, Any]
    #: closed windows held back while the scope's run is in flight
    waiting: int


def evaluate_scope(
    context: SensorEvaluationContext,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
    scope: Scope,
    state: dict[str, Any],
    now_ms: int,
    held: Callable[[], list[tuple[int | None, tuple[int, int]]]],
) -> ScopeTick:
    """Heal runs for the scope's ranges never processed, then runs for its windows closed since its cursor
    (`state`: `next_ms`, `heal`); the scope's own runs in flight hold its open-hour windows back. `held`
    reads what unfinished runs hold (`held_by_run`)."""
    cursor = state.get("next_ms")
    if cursor is None:
        cursor = initial_cursor(redis, database, now_ms, policy.window_ms, scope)
    heals, tried = heal_requests(
        redis,
        database,
        policy,
        cursor,
        now_ms,
        state.get("heal", {}),
        lambda: [ranges for shard, ranges in held() if scope.holds(shard)],
        scope,
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
        windows = defer_while_busy(windows, runs_in_flight(context, scope), MAX_RUNS_IN_FLIGHT)
    if not windows:
        return ScopeTick(heals, {"next_ms": cursor, "heal": tried}, closed)
    chosen, next_ms = choose_windows(
        windows,
        cursor,
        now_ms,
        policy.window_grace_ms,
        policy.skip_empty_windows,
        lambda window: scope.has_entries(redis, window),
    )
    requests = [*heals, *(run_request(window, scope=scope) for window in chosen)]
    return ScopeTick(requests, {"next_ms": next_ms, "heal": tried}, 0)


def shard_states(state: dict[str, Any], scopes: list[Scope]) -> list[dict[str, Any]]:
    """Each scope's part of the cursor. One scope (one stream) owns the whole cursor, as it always has;
    with several shards each has its own under `shards`, and a shard without one starts where the cursor
    of every stream stood (a cursor written before the shards had runs of their own)."""
    if len(scopes) == 1 and scopes[0].shard is None:
        return [state]
    parts = state.get("shards") or {}
    start = {"next_ms": state["next_ms"]} if state.get("next_ms") is not None else {}
    return [parts.get(str(scope.shard), start) for scope in scopes]


def cursor_of(scopes: list[Scope], ticks: list[ScopeTick]) -> str:
    """The cursor after a tick: with several shards, each shard's part and, as `next_ms`, the earliest
    of them (where a single stream would resume)."""
    if len(scopes) == 1 and scopes[0].shard is None:
        return json.dumps(ticks[0].state)
    parts = {str(scope.shard): tick.state for scope, tick in zip(scopes, ticks, strict=True)}
    return json.dumps({"next_ms": min(t.state["next_ms"] for t in ticks), "shards": parts})


def evaluate(
    context: SensorEvaluationContext,
    redis: RedisStreamsResource,
    database: DatabaseResource,
    policy: BatchPolicyResource,
) -> SensorResult:
    """One tick: for every shard (or every stream, with one), heal runs for ranges never processed, then
    runs for the windows closed since its cursor. A shard that is behind holds back only its own windows."""
    now_ms = redis.now_ms()
    state = json.loads(context.cursor) if context.cursor else {}
    scopes = Scope.all_of(redis)
    held = functools.cache(lambda: held_by_run(context))  # read once a tick, for every shard
    ticks = [
        evaluate_scope(context, redis, database, policy, scope, part, now_ms, held)
        for scope, part in zip(scopes, shard_states(state, scopes), strict=True)
    ]
    cursor = cursor_of(scopes, ticks)
    requests = [request for tick in ticks for request in tick.requests]
    if requests:
        return SensorResult(run_requests=requests, cursor=cursor)
    waiting = [tick.waiting for tick in ticks if tick.waiting]
    if not waiting:
        reason = "no window has closed yet"
    elif len(scopes) == 1:
        reason = f"{waiting[0]} closed window(s) wait for the run in flight; one run takes them later"
    else:
        reason = (
            f"{sum(waiting)} closed window(s) of {len(waiting)} shard(s) wait for their shard's run in "
            "flight; one run per shard takes them later"
        )
    return SensorResult(skip_reason=SkipReason(reason), cursor=cursor)


def build_micro_window_sensor(interval_s: int) -> SensorDefinition:
    @sensor(
        name="micro_window_sensor",
        job_name=MICRO_BATCH_JOB,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Requests a run per closed micro-window of arrival time (a whole hour when catching "
        "up), per stream shard when there are several. Its cursor is the start of the next window to "
        "request (each shard's under `shards`).",
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
