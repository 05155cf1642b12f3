"""Redis near its maxmemory (noeviction): compaction trims every archived entry despite the trim margin and
never an unarchived one; `status` and the `redis_memory` check say how close Redis is to its limit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from dagster import DagsterInstance
from pydantic import SecretStr

from dagster_project.definitions import defs
from dagster_project.defs.ingest.sensors import run_request
from dagster_project.defs.resources import resources_from_settings
from dagster_project.lib.compaction import trim_horizon_ms
from dagster_project.lib.windows import Window, floor_to
from iot_core.redis_memory import PRESSURE_SHARE, RedisMemory
from iot_core.settings import Settings
from iot_core.streams import EntryId, stream_names
from iot_etl.status import redis_memory_line
from tests.support.pipeline import SensorDriver
from tests.support.redis_server import PrivateRedis

MB = 1_048_576
MAXMEMORY = "8mb"
WINDOW_MS = 10_000
PAD = "x" * 1000  # a field the archive ignores: it only makes each entry big


# --- the decision (pure) -------------------------------------------------------------------------
def test_the_margin_holds_below_the_threshold_and_gives_way_above_it() -> None:
    now, margin, grace = 10_000_000, 3_600_000, 2_000
    calm = RedisMemory(used_bytes=int(0.79 * 100 * MB), max_bytes=100 * MB)
    pressed = RedisMemory(used_bytes=int(0.81 * 100 * MB), max_bytes=100 * MB)
    assert trim_horizon_ms(now, margin, grace, calm) == now - margin
    assert trim_horizon_ms(now, margin, grace, pressed) == now - grace  # a closing window is still kept
    assert trim_horizon_ms(now, margin, grace, None) == now - margin  # memory unknown: the margin holds
    assert trim_horizon_ms(now, margin, grace, RedisMemory(500 * MB, 0)) == now - margin  # no limit
    assert trim_horizon_ms(now, 0, grace, calm) == now - grace


def test_memory_is_described_with_its_limit_and_the_pressure() -> None:
    assert RedisMemory(5 * MB, 0).describe() == "5.0 MB, no maxmemory set"
    assert RedisMemory(5 * MB, 0).share is None and not RedisMemory(5 * MB, 0).under_pressure
    assert RedisMemory(5 * MB, 10 * MB).describe() == "5.0 MB of 10.0 MB maxmemory (50 %)"
    full = RedisMemory(9 * MB, 10 * MB)
    assert full.under_pressure and full.describe().startswith(
        "9.0 MB of 10.0 MB maxmemory (90 %): above 80 %"
    )
    assert RedisMemory(int(PRESSURE_SHARE * 10 * MB), 10 * MB).under_pressure


# --- a real Redis with maxmemory and noeviction -------------------------------------------------
@pytest.fixture
def full_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis(extra_args=["--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction"]) as server:
        yield server


def fill(client: redis.Redis, stream: str, start_ms: int, until_share: float) -> int:
    """Entries from `start_ms` on, one per ms, until Redis holds `until_share` of its maxmemory."""
    added = 0
    while True:
        info = client.info("memory")
        if info["used_memory"] >= until_share * info["maxmemory"]:
            return added
        with client.pipeline(transaction=False) as pipe:
            for _ in range(200):
                pipe.xadd(stream, entry(added), id=f"{start_ms + added}-0")
                added += 1
            pipe.execute()


def entry(n: int) -> dict[str, str]:
    return {"topic": "devices/full0001/temperature", "payload": f"{20 + n % 10}", "qos": "1", "pad": PAD}


def compaction_run(settings: Settings, instance: DagsterInstance) -> tuple[dict, dict]:
    """compaction_job in-process: (compaction's metadata, the redis_memory check's evaluation)."""
    result = defs.resolve_job_def("compaction_job").execute_in_process(
        instance=instance, resources=resources_from_settings(settings)
    )
    assert result.success
    metadata = result.asset_materializations_for_node("compaction")[0].metadata
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "redis_memory"]
    return {k: v.value for k, v in metadata.items()}, check


@pytest.mark.services
def test_under_pressure_compaction_trims_archived_entries_despite_the_margin(
    clean_db: str, settings: Settings, full_redis: PrivateRedis
) -> None:
    settings = settings.model_copy(update={"redis_url": SecretStr(full_redis.url), "stream_shards": 1})
    assert settings.stream_trim_margin_s >= 3600  # the default margin: every entry below is within it
    [stream] = stream_names(settings.stream_prefix, 1)
    admin = full_redis.client()
    seconds, _ = admin.time()
    archived = Window(start := floor_to(int(seconds) * 1000 - 20 * 60_000, WINDOW_MS), start + WINDOW_MS)
    unarchived = Window(archived.end_ms, archived.end_ms + WINDOW_MS)
    filled = fill(admin, stream, archived.start_ms, 0.85)
    assert 0 < filled < WINDOW_MS  # all in the first window
    for n in range(20):
        admin.xadd(stream, entry(n), id=f"{unarchived.start_ms + n}-0")
    line = redis_memory_line(admin)
    assert "of 8.0 MB maxmemory (" in line.value and "above 80 %" in line.value

    with DagsterInstance.ephemeral() as instance:
        # nothing archived yet: nothing may go, however full Redis is, and the check warns
        metadata, check = compaction_run(settings, instance)
        assert metadata["redis_under_memory_pressure"] and metadata["stream_entries_trimmed"] == 0
        assert not check.passed and check.severity.value == "WARN"
        assert admin.xlen(stream) == filled + 20

        SensorDriver(settings, instance).execute(run_request(archived))

        # no limit, no pressure: the margin keeps the archived entries for re-runs
        admin.config_set("maxmemory", "0")
        metadata, check = compaction_run(settings, instance)
        assert not metadata["redis_under_memory_pressure"] and metadata["stream_entries_trimmed"] == 0
        assert check.passed and "no maxmemory set" in (check.description or "")

        # under pressure the margin gives way for what is archived, and only for that
        admin.config_set("maxmemory", MAXMEMORY)
        metadata, check = compaction_run(settings, instance)
        assert metadata["redis_under_memory_pressure"] and metadata["stream_entries_trimmed"] == filled
        left = [EntryId.parse(entry_id).ms for entry_id, _ in admin.xrange(stream)]
        assert len(left) == 20 and min(left) == unarchived.start_ms
        assert check.passed, check.description
    admin.close()
