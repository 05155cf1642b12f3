"""The micro-window sensor: one run per closed arrival window, with the exact stream-ID range."""

import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from dagster_project.jobs import micro_batch_job
from dagster_project.resources import DatabaseResource, RedisStreamsResource
from dagster_project.windows import Window, choose_windows, closed_windows, floor_to
from iot_core.settings import get_settings
from iot_core.streams import id_range


def run_request(window: Window) -> RunRequest:
    start_id, end_id = id_range(window.start_ms, window.end_ms)
    window_config = {"config": {"start_ms": window.start_ms, "end_ms": window.end_ms}}
    return RunRequest(
        run_key=window.run_key,
        partition_key=window.partition_key,
        run_config={"ops": {"raw_messages": window_config, "telemetry": window_config}},
        tags={
            "iot/start_id": start_id,
            "iot/end_id": end_id,
            "iot/window": "hour" if window.whole_hour else "micro",
            "iot/closes_hour": str(window.closes_hour).lower(),
        },
    )


def _initial_cursor(
    redis: RedisStreamsResource, database: DatabaseResource, now_ms: int, window_ms: int
) -> int:
    """Where a sensor without a cursor starts: after the last landed batch, else at the first stream entry,
    else at the current window."""
    with database.connect() as conn:
        row = conn.execute("SELECT max(range_end) FROM batches WHERE finished_at IS NOT NULL").fetchone()
    if row and row[0] is not None:
        return floor_to(int(row[0].timestamp() * 1000), window_ms)
    first = redis.first_entry_ms(redis.client())
    return floor_to(first if first is not None else now_ms, window_ms)


@sensor(
    job=micro_batch_job,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests a run per closed micro-window of arrival time (a whole hour when catching up).",
)
def micro_window_sensor(
    context: SensorEvaluationContext, redis: RedisStreamsResource, database: DatabaseResource
) -> SensorResult | SkipReason:
    settings = get_settings()
    window_ms = settings.window_ms
    client = redis.client()
    now_ms = redis.now_ms(client)
    cursor = json.loads(context.cursor)["next_ms"] if context.cursor else None
    if cursor is None:
        cursor = _initial_cursor(redis, database, now_ms, window_ms)
    # windows that will have closed by the time their run has started: the run waits for the close
    windows = closed_windows(
        cursor,
        now_ms + settings.sensor_lead_ms,
        window_ms,
        settings.window_grace_ms,
        settings.sensor_max_runs_per_tick,
    )
    if not windows:
        return SensorResult(
            skip_reason=SkipReason("no window has closed yet"), cursor=json.dumps({"next_ms": cursor})
        )
    chosen, next_ms = choose_windows(
        windows,
        cursor,
        now_ms,
        settings.window_grace_ms,
        settings.sensor_skip_empty_windows,
        lambda w: redis.has_entries(client, w.start_ms, w.end_ms),
    )
    requests = [run_request(window) for window in chosen]
    return SensorResult(run_requests=requests, cursor=json.dumps({"next_ms": next_ms}))
