"""Drive the Dagster side in-process the way the daemon does: evaluate the sensor, execute its requests."""

from __future__ import annotations

import json
import time

from dagster import DagsterInstance, ExecuteInProcessResult, RunRequest, build_sensor_context

from dagster_project.definitions import defs
from dagster_project.defs.ingest.sensors import build_micro_window_sensor
from dagster_project.defs.resources import resources_from_settings
from iot_core.redis_client import redis_client, streams_clock_ms
from iot_core.settings import Settings
from iot_core.streams import stream_names


def execute_request(
    request: RunRequest, instance: DagsterInstance, resources: dict, *, raise_on_error: bool = True
) -> ExecuteInProcessResult:
    """`request` (as the sensor makes it) through `micro_batch_job`, in this process."""
    return defs.resolve_job_def("micro_batch_job").execute_in_process(
        run_config=request.run_config,
        partition_key=request.partition_key,
        instance=instance,
        tags=request.tags,
        resources=resources,
        raise_on_error=raise_on_error,
    )


class SensorDriver:
    """Keeps the sensor cursor between evaluations, like the daemon does."""

    def __init__(self, settings: Settings, instance: DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance
        self.cursor: str | None = None
        self.resources = resources_from_settings(settings)
        self.sensor = build_micro_window_sensor(settings.sensor_interval_s)

    def tick(self) -> list[RunRequest]:
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources={k: self.resources[k] for k in ("redis", "database", "policy")},
        )
        result = self.sensor(context)
        self.cursor = result.cursor
        return list(result.run_requests or [])

    @property
    def next_ms(self) -> int | None:
        return json.loads(self.cursor)["next_ms"] if self.cursor else None

    def execute(self, request: RunRequest) -> None:
        assert execute_request(request, self.instance, self.resources).success

    def drain(self, until_ms: int, timeout_s: float = 60.0) -> list[RunRequest]:
        """Tick and execute until the cursor has passed `until_ms` (Redis time), e.g. the last entry."""
        s = self.settings
        client = redis_client(s.redis_url.get_secret_value(), s.redis_mode)
        streams = stream_names(s.stream_prefix, s.stream_shards, cluster=s.redis_cluster)
        done: list[RunRequest] = []
        deadline = time.monotonic() + timeout_s
        while self.next_ms is None or self.next_ms <= until_ms:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sensor cursor {self.next_ms} did not pass {until_ms}")
            for request in self.tick():
                self.execute(request)
                done.append(request)
            if self.next_ms is None or self.next_ms <= until_ms:
                now_ms = streams_clock_ms(client, streams)
                wait_ms = (
                    (self.next_ms or now_ms)
                    + self.settings.window_ms
                    + self.settings.window_grace_ms
                    - now_ms
                )
                time.sleep(min(max(wait_ms / 1000, 0.05), 2.0))
        return done
