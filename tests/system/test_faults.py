"""Faults injected for real into a running `iot-etl up` (private broker, Redis with AOF and PostgreSQL):
every published message ends as a fact row or a rejection, the whole stream is archived, and nobody has
to do anything but bring the failed service back (or, where `up` itself died, start it again).

The phases share one stack (starting it costs a minute on a busy machine) but each publishes its own
devices and is accounted on its own; a phase that leaves `up` stopped is followed by a fresh `up`."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from dagster import DagsterInstance

from dagster_project.run_launcher import CANCEL_GRACE_S, CANCEL_POLL_S, PID_TAG
from iot_etl.dagster_instance import RUN_MONITORING_POLL_S
from tests.support.fault_stack import (
    HEAL_AFTER_S,
    Accounting,
    FaultStack,
    Publisher,
    messages_for,
    run_summary,
    wait_accounted,
)
from tests.support.postgres_server import PG_BIN
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the mosquitto broker"),
    pytest.mark.skipif(not (PG_BIN / "pg_ctl").exists(), reason="needs the PostgreSQL server binaries"),
]
COUNT = 600
RATE = 40.0  # messages per second: 15 s of publishing, two windows
HEAL_BUDGET_S = 900.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    fault_stack = FaultStack(tmp_path_factory.mktemp("faults"))
    try:
        yield fault_stack.start()
    finally:
        fault_stack.close()


def publish_and_wait(stack: FaultStack, tag: str, after_sent: int) -> tuple[Publisher, list[tuple[str, str]]]:
    stack.ensure_up()
    messages = messages_for(tag, COUNT)
    publisher = Publisher(stack.broker, messages, RATE)
    wait_until(lambda: publisher.sent >= after_sent, 120, interval_s=0.1, what="publishing to go on")
    return publisher, messages


def report(fault: str, result: Accounting, healed_s: float, stack: FaultStack, runs_before: set[str]) -> None:
    """One line per phase; its runs are those that did not exist before it began."""
    phase_runs = [run for run in stack.runs() if run["runId"] not in runs_before]
    print(
        f"\n{fault}: published {result.published}, stored {result.stored}, rejected {result.rejected}, "
        f"lost {result.lost}; archived {result.archived} of {result.stream_entries} stream entries; "
        f"all accounted {healed_s:.0f} s after the fault ended; {run_summary(phase_runs)}"
    )


def run_ids(stack: FaultStack) -> set[str]:
    return {str(run["runId"]) for run in stack.runs()}


def assert_nothing_lost(result: Accounting) -> None:
    assert result.lost == 0, result
    assert result.archived == result.stream_entries, result
    assert result.stored + result.rejected == result.published == COUNT
    assert result.rejected == COUNT // 10  # the device_mismatch events, and nothing else


def test_postgres_down_for_a_minute_while_windows_close(stack: FaultStack) -> None:
    tag = f"pg{uuid.uuid4().hex[:6]}"
    before = run_ids(stack)
    publisher, messages = publish_and_wait(stack, tag, after_sent=200)
    stack.postgres.stop()
    time.sleep(60)  # the rest is published and at least five windows close meanwhile; their runs fail
    stack.postgres.start()
    back = time.monotonic()
    assert publisher.wait() == COUNT
    result, healed_s = wait_accounted(stack, tag, messages, back, HEAL_BUDGET_S)
    report("PostgreSQL stopped 60 s", result, healed_s, stack, before)
    assert_nothing_lost(result)
    assert stack.up is not None and stack.up.poll() is None, "up must ride the outage out"


def test_redis_sigkilled_mid_stream_and_restarted(stack: FaultStack) -> None:
    tag = f"rd{uuid.uuid4().hex[:6]}"
    before = run_ids(stack)
    publisher, messages = publish_and_wait(stack, tag, after_sent=200)
    entries = stack.stream_entries()
    stack.redis.kill()
    time.sleep(5)
    stack.redis.start()  # same directory: the append-only file brings every acknowledged entry back
    back = time.monotonic()
    assert stack.stream_entries() >= entries
    assert publisher.wait() == COUNT
    result, healed_s = wait_accounted(stack, tag, messages, back, HEAL_BUDGET_S)
    report("Redis SIGKILLed, restarted after 5 s", result, healed_s, stack, before)
    assert_nothing_lost(result)
    assert stack.up is not None and stack.up.poll() is None, "up must ride the outage out"


@pytest.mark.parametrize("where", ["ui", "elsewhere"])
def test_a_run_terminated_is_canceled_and_its_window_healed(stack: FaultStack, where: str) -> None:
    """The UI's Terminate interrupts the worker: the launcher signals it where it can (`ui`: the webserver
    runs on the worker's machine); where it cannot (`elsewhere`: a webserver in another container only
    marks the run CANCELING) the worker's own watcher does, which polls the run's status. A canceled run
    is not retried; the sensor's heal runs the window again."""
    tag = f"tm{uuid.uuid4().hex[:6]}"
    stack.ensure_up()
    stack.wait_idle()
    before = run_ids(stack)
    with landing_held(stack):
        publisher, messages = publish_and_wait(stack, tag, after_sent=1)
        run_id, _ = started_run(stack, before)
        if where == "ui":
            assert stack.terminate(run_id).startswith("TerminateRunSuccess"), run_id
        else:
            with DagsterInstance.from_config(stack.env["IOT_DAGSTER_HOME"]) as instance:
                run = instance.get_run_by_id(run_id)
                assert run is not None
                instance.report_run_canceling(run)
        wait_until(
            lambda: any(r["runId"] == run_id for r in stack.runs(["CANCELED"])),
            CANCEL_GRACE_S + 4 * CANCEL_POLL_S + 30,
            interval_s=1,
            what=f"run {run_id} to be canceled",
        )
        canceled = time.monotonic()
    assert publisher.wait() == COUNT
    result, healed_s = wait_accounted(stack, tag, messages, canceled, HEAL_BUDGET_S)
    report(f"a run terminated ({where})", result, healed_s, stack, before)
    assert_nothing_lost(result)


@contextmanager
def landing_held(stack: FaultStack) -> Iterator[None]:
    """While inside, a window's landing waits for a table lock: its run is caught mid-way."""
    with psycopg.connect(stack.database_url) as blocker:
        blocker.execute("LOCK TABLE raw_messages IN SHARE ROW EXCLUSIVE MODE")
        yield


def started_run(stack: FaultStack, before: set[str]) -> tuple[str, int]:
    """The id and worker pid of the first run of this phase seen STARTED with its worker's pid recorded
    (a hidden tag, which GraphQL leaves out: read from the instance)."""
    with DagsterInstance.from_config(stack.env["IOT_DAGSTER_HOME"]) as instance:

        def with_worker() -> tuple[str, int] | None:
            for run in stack.runs(["STARTED"]):
                record = None if run["runId"] in before else instance.get_run_by_id(str(run["runId"]))
                if record is not None and PID_TAG in record.tags:
                    return record.run_id, int(record.tags[PID_TAG])
            return None

        return wait_until(with_worker, 240, interval_s=0.2, what="a run of this phase to start")


def test_run_worker_sigkilled_mid_run(stack: FaultStack) -> None:
    """The run-monitoring daemon sees the worker gone (the forking launcher keeps its pid) and fails the
    run within a poll or two, not after the one-hour runtime bound; run retries and the sensor do the rest."""
    tag = f"rw{uuid.uuid4().hex[:6]}"
    stack.ensure_up()
    stack.wait_idle()
    before = run_ids(stack)
    with landing_held(stack):
        publisher, messages = publish_and_wait(stack, tag, after_sent=1)
        run_id, pid = started_run(stack, before)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
    wait_until(
        lambda: any(r["runId"] == run_id for r in stack.runs(["FAILURE"])),
        killed + 2 * RUN_MONITORING_POLL_S + 60 - time.monotonic(),
        interval_s=2,
        what=f"run {run_id} to be failed after its worker died",
    )
    failed_after_s = time.monotonic() - killed
    assert publisher.wait() == COUNT
    result, healed_s = wait_accounted(stack, tag, messages, killed, HEAL_BUDGET_S)
    report(
        f"run worker SIGKILLed mid-run, run failed {failed_after_s:.0f} s later",
        result,
        healed_s,
        stack,
        before,
    )
    assert_nothing_lost(result)
    assert stack.up is not None and stack.up.poll() is None, "up must ride it out"


def test_up_sigkilled_mid_stream_and_started_again(stack: FaultStack) -> None:
    tag = f"up{uuid.uuid4().hex[:6]}"
    before = run_ids(stack)
    publisher, messages = publish_and_wait(stack, tag, after_sent=200)
    stack.kill_up()  # listener, daemon, webserver, code servers and any run worker go with it
    stack.start_up()  # same Dagster home, same broker: the listener's session kept what came meanwhile
    back = time.monotonic()
    assert publisher.wait() == COUNT
    result, healed_s = wait_accounted(stack, tag, messages, back, HEAL_BUDGET_S)
    report("iot-etl up SIGKILLed, started again", result, healed_s, stack, before)
    assert_nothing_lost(result)


def test_daemon_sigkilled_while_a_run_starts(stack: FaultStack) -> None:
    tag = f"dm{uuid.uuid4().hex[:6]}"
    before = run_ids(stack)
    publisher, messages = publish_and_wait(stack, tag, after_sent=1)
    # a window's run lasts ~2 s in STARTING
    starting = wait_until(lambda: stack.runs(["STARTING"]), 240, interval_s=0.1, what="a run starting")
    processes = stack.children()
    os.kill(stack.child_pid("dagster-daemon"), signal.SIGKILL)
    stack.wait_up_gone(processes)  # a child that dies stops `up` and all the rest (exit status 1)
    assert stack.up is not None and stack.up.returncode == 1
    stuck = str(starting[0]["runId"])
    stack.start_up()
    back = time.monotonic()
    assert publisher.wait() == COUNT
    result, healed_s = wait_accounted(stack, tag, messages, back, HEAL_BUDGET_S)
    assert_nothing_lost(result)
    # the run seen STARTING does not stay so: run monitoring fails it after its STARTING timeout. One that
    # got to STARTED before its worker died stays STARTED until the one-hour runtime limit; its window is
    # processed all the same (the heal run above), which is what this test requires.
    wait_until(
        lambda: not any(run["runId"] == stuck for run in stack.runs(["QUEUED", "STARTING"])),
        300 + HEAL_AFTER_S,
        interval_s=5,
        what=f"run {stuck} to leave STARTING",
    )
    [final] = [run["status"] for run in stack.runs() if run["runId"] == stuck]
    # the starting run may be an earlier phase's last window, queued before this phase began
    report(f"dagster-daemon SIGKILLed, run STARTING, then {final}", result, healed_s, stack, before - {stuck})
    print(f"run {stuck} was {final} {time.monotonic() - back:.0f} s after up was back")
