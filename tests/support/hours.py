"""Put stream entries into a closed hour (explicit entry IDs) and run the whole hour through the real job."""

from __future__ import annotations

import redis
from dagster import DagsterInstance, ExecuteInProcessResult

from dagster_project.definitions import defs
from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.windows import HOUR_MS, Window
from iot_core.settings import Settings
from tests.support.pipeline import execute_request


class ClosedHour:
    """The hour before Redis's current one; entries are added in increasing ID order (fresh stream)."""

    def __init__(self, settings: Settings, hours_back: int = 1) -> None:
        self.settings = settings
        self.client = redis.Redis.from_url(settings.redis_url.get_secret_value())
        seconds, _ = self.client.time()
        self.start_ms = (int(seconds) // 3600 - hours_back) * HOUR_MS
        self.window = Window(self.start_ms, self.start_ms + HOUR_MS)
        self._seq = 0

    @property
    def partition_key(self) -> str:
        return self.window.partition_key

    def add(self, at_s: float, topic: str, payload: bytes | str) -> str:
        """An entry `at_s` seconds into the hour, as the listener writes it; returns its stream ID."""
        ms = self.start_ms + int(at_s * 1000)
        self._seq += 1
        entry_id = f"{ms}-{self._seq}"
        self.client.xadd(
            self.settings.stream_prefix,
            {
                "topic": topic,
                "payload": payload.encode() if isinstance(payload, str) else payload,
                "qos": "1",
                "retain": "0",
                "rx_us": str(ms * 1000),
            },
            id=entry_id,
        )
        return entry_id

    def run(self, instance: DagsterInstance, **kwargs: object) -> ExecuteInProcessResult:
        """The whole hour through `micro_batch_job` (no config: a backfill of the hour)."""
        job = defs.resolve_job_def("micro_batch_job")
        return job.execute_in_process(partition_key=self.partition_key, instance=instance, **kwargs)


def run_micro(
    settings: Settings, instance: DagsterInstance, window: Window, *, raise_on_error: bool = True
) -> ExecuteInProcessResult:
    """`window`'s micro-batch run as the sensor requests it."""
    resources = resources_from_settings(settings)
    return execute_request(run_request(window), instance, resources, raise_on_error=raise_on_error)


def check_results(result: ExecuteInProcessResult) -> dict:
    """check name -> its evaluation."""
    return {c.check_name: c for c in result.get_asset_check_evaluations()}
