"""The end-to-end comparison harness, at tiny scale: one baseline on plain messages, both modes, every JSON
column; the product on the fleet's mix; which systems take which messages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bench.compare import main, parse_args
from bench.e2e.messages import MIX, source
from bench.e2e.processes import classify
from bench.e2e.report import COLUMNS, GROUP_COLUMNS

pytestmark = pytest.mark.services


def test_compare_writes_every_column(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    main(
        [
            "--systems", "copy",
            "--kinds", "plain",
            "--messages", "300",
            "--rate", "100",
            "--duration", "2",
            "--publishers", "2",
            "--json", str(out),
        ]
    )  # fmt: skip
    document = json.loads(out.read_text())
    runs = document["runs"]
    assert [(r["system"], r["mode"]) for r in runs] == [("copy", "burst"), ("copy", "sustained")]
    for run in runs:
        for key, _, _ in COLUMNS:
            assert run[key] is not None or key == "longest_run_s", key
        assert run["longest_run_s"] is None  # a baseline has no runs
        for key in GROUP_COLUMNS:
            assert {"writer", "postgres", "broker"} <= set(run[key]), key
        assert run["lost"] == 0
        assert run["stored"] == run["messages"]
        assert run["latency_p50_s"] <= run["latency_p95_s"] <= run["latency_p99_s"]
    assert runs[1]["messages"] == 200
    assert {(m["system"], m["mode"]) for m in document["medians"]} == {
        ("copy", "burst"),
        ("copy", "sustained"),
    }


@pytest.mark.slow
def test_the_product_on_the_fleets_mix_is_counted_by_message(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    main(
        [
            "--modes", "burst",
            "--messages", "400",
            "--window", "10",
            "--publishers", "2",
            "--json", str(out),
        ]
    )  # fmt: skip
    [run] = json.loads(out.read_text())["runs"]
    assert (run["system"], run["kinds"], run["bad_share"]) == ("product-10s", "plain,event,f2", 0.05)
    # every message is counted once whatever it became (rows, several rows, a rejection); the probes
    # that told the listener was subscribed are not
    assert run["stored"] == run["messages"] == 400
    assert run["lost"] == 0
    assert run["latency_p50_s"] <= run["latency_p95_s"]


def test_the_fleets_mix_is_the_default_and_the_baselines_take_plain_messages_only() -> None:
    assert parse_args([]).systems == "product"
    assert parse_args(["--kinds", "plain"]).systems == "product,copy,executemany,insert"
    with pytest.raises(SystemExit):
        parse_args(["--systems", "product,copy"])


def test_a_publisher_of_the_fleet_sends_every_format_and_some_bad_messages() -> None:
    message = source(0, MIX, 0.05)
    topics = [message(seq, 1_765_000_000.0 + seq / 1000)[0] for seq in range(2000)]
    assert any(t.startswith("devices/") for t in topics)
    assert any(t.startswith("qs/v1/") and t.endswith("/events") for t in topics)
    assert any("/f2-" in t for t in topics)
    # two publisher processes are two fleets of their own devices
    other = source(1, MIX, 0.05)
    plain_devices = {t.split("/")[1] for t in topics if t.startswith("devices/")}
    theirs = {t.split("/")[1] for t in (other(s, 1_765_000_000.0)[0] for s in range(500))}
    assert not plain_devices & {d for d in theirs if not d.startswith("f2-")}


def test_classify_knows_the_product_processes() -> None:
    assert classify("/x/.venv/bin/python -m ingest_listener") == "listener"
    assert classify("/x/python /x/dagster-daemon run -w /x/workspace.yaml") == "dagster-daemon"
    assert classify("/x/python -m dagster api grpc --lazy-load-user-code --socket /tmp/s") == "code-server"
    assert (
        classify("/x/python -B -c from multiprocessing.spawn import spawn_main; spawn_main()")
        == "run-workers"
    )
    instance_ref = '--instance-ref {"compute_logs_data": {}}'
    assert classify(f"/x/python -m dagster api grpc --socket /tmp/s {instance_ref}") == "code-server"
    assert classify("postgres: postgres bench_e2e_x 127.0.0.1(5000) idle") == "postgres"
    assert classify("redis-server 127.0.0.1:6390") == "redis"


def test_step_times_are_read_from_a_stopped_stacks_dagster_home(tmp_path: Path) -> None:
    from dagster import DagsterInstance, job, op

    from bench.e2e.steps import describe, run_steps

    @op
    def wait_a_little() -> None:
        time.sleep(0.3)

    @op
    def quick() -> None:
        pass

    @job(name="steps_probe")
    def probe() -> None:
        wait_a_little()
        quick()

    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert probe.execute_in_process(instance=instance, tags={"iot/window": "12:00-12:01"}).success
    [run] = run_steps(tmp_path, job="steps_probe")
    assert run.label == "12:00-12:01"
    assert set(run.steps) == {"wait_a_little", "quick"}
    assert 0.3 <= run.steps["wait_a_little"] <= run.seconds
    assert run.steps["quick"] < run.steps["wait_a_little"]
    assert describe([run]).startswith("12:00-12:01")
