"""What the UI's catalog shows of every definition: a description everywhere, owners and kinds on assets."""

from __future__ import annotations

from dagster_project.definitions import build_definitions
from dagster_project.defs.partitions import build_hourly_partitions
from iot_core.settings import Settings


def test_every_asset_has_a_description_owners_and_kinds(settings: Settings) -> None:
    specs = build_definitions(settings).resolve_all_asset_specs()
    assert {spec.key.to_user_string() for spec in specs} >= {
        "raw_messages",
        "telemetry",
        "hourly_rollups",
        "compaction",
    }
    for spec in specs:
        name = spec.key.to_user_string()
        assert (spec.description or "").strip(), f"asset {name} has no description"
        assert spec.owners, f"asset {name} has no owners"
        assert all(o.startswith("team:") or "@" in o for o in spec.owners), (name, spec.owners)
        assert spec.kinds, f"asset {name} has no kinds"


def test_every_check_job_sensor_and_schedule_has_a_description(settings: Settings) -> None:
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    checks = {key: graph.get_check_spec(key) for key in graph.asset_check_keys}
    assert len(checks) >= 7
    undescribed = [
        key.to_user_string() for key, spec in checks.items() if not (spec.description or "").strip()
    ]
    assert not undescribed, f"checks without a description: {undescribed}"

    # the implicit asset job (`__ASSET_JOB`) is Dagster's own and has no place for one
    jobs = [job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")]
    assert {job.name for job in jobs} >= {"micro_batch_job", "compaction_job"}
    sensors = [defs.resolve_sensor_def(s.name) for s in defs.sensors or []]
    schedules = [defs.resolve_schedule_def(s.name) for s in defs.schedules or []]
    assert sensors and schedules
    for kind, items in (("job", jobs), ("sensor", sensors), ("schedule", schedules)):
        undescribed = [item.name for item in items if not (item.description or "").strip()]
        assert not undescribed, f"{kind}s without a description: {undescribed}"


def test_hour_checks_are_partitioned_by_hour_and_only_reconciliation_blocks(settings: Settings) -> None:
    graph = build_definitions(settings).resolve_asset_graph()
    hourly = {
        key.name: graph.get_check_spec(key)
        for key in graph.asset_check_keys
        if graph.get_check_spec(key).partitions_def is not None
    }
    assert set(hourly) == {
        "archive_complete",
        "reconciliation",
        "schema_pass_rate",
        "plausibility",
        "duplicates",
        "device_freshness",
    }
    partitions = build_hourly_partitions(settings.partitions_start or "")
    assert all(spec.partitions_def == partitions for spec in hourly.values())
    assert build_definitions(settings).resolve_job_def("micro_batch_job").partitions_def == partitions
    assert {name for name, spec in hourly.items() if spec.blocking} == {"reconciliation"}
