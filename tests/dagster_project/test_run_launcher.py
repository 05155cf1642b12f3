"""The forking run launcher: which run workers it counts as alive (real processes, pid reuse included),
that the instance configuration selects it unless `IOT_DAGSTER_RUN_LAUNCHER=default`, and when its
forkserver starts (IOT_RUN_WORKERS_START): as the daemon starts, or once for the first runs launched."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TypeVar

import psutil
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    reconstructable,
    serialize_value,
)

from dagster_project.dagster_internals import WorkerStatus, configurable_class_config
from dagster_project.run_launcher import (
    CANCEL_GRACE_S,
    CANCEL_POLL_S,
    PID_TAG,
    STARTED_TAG,
    ForkingRunLauncher,
    work,
)
from iot_core.settings import Settings
from iot_etl.dagster_instance import FORKING_RUN_LAUNCHER, instance_config
from tests.support.retrying_job import retrying_job
from tests.support.waiting import wait_until

T = TypeVar("T")
#: the grace, a few polls, and slack for a loaded machine
CANCELED_WITHIN_S = CANCEL_GRACE_S + 4 * CANCEL_POLL_S + 30


def not_none(value: T | None) -> T:
    assert value is not None
    return value


def run_with(tags: dict[str, str]) -> DagsterRun:
    return DagsterRun(job_name="micro_batch_job", run_id="0f0f0f0f-0000-0000-0000-000000000000", tags=tags)


def worker_tags(process: psutil.Process) -> dict[str, str]:
    return {PID_TAG: str(process.pid), STARTED_TAG: repr(process.create_time())}


def test_a_live_worker_is_running_and_a_dead_one_failed() -> None:
    launcher = ForkingRunLauncher()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tags = worker_tags(psutil.Process(child.pid))
        assert launcher.check_run_worker_health(run_with(tags)).status == WorkerStatus.RUNNING
        child.kill()
        child.wait()
        result = launcher.check_run_worker_health(run_with(tags))
        assert result.status == WorkerStatus.FAILED
        assert f"pid {child.pid}" in (result.msg or "")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_pid_taken_by_another_process_is_not_the_worker() -> None:
    me = psutil.Process()
    reused = {PID_TAG: str(me.pid), STARTED_TAG: repr(me.create_time() - 3600)}
    assert ForkingRunLauncher().check_run_worker_health(run_with(reused)).status == WorkerStatus.FAILED


def test_an_unreaped_worker_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tags = worker_tags(psutil.Process(child.pid))
    wait_until(
        lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 30, what="the child to exit"
    )
    try:
        assert ForkingRunLauncher().check_run_worker_health(run_with(tags)).status == WorkerStatus.FAILED
    finally:
        child.wait()


def test_a_run_without_a_worker_pid_is_left_to_the_runtime_bound() -> None:
    result = ForkingRunLauncher().check_run_worker_health(run_with({}))
    assert result.status == WorkerStatus.RUNNING


def test_the_instance_uses_the_forking_launcher_unless_told_otherwise() -> None:
    block = instance_config(Settings())["run_launcher"]
    assert {k: block[k] for k in ("module", "class")} == FORKING_RUN_LAUNCHER
    assert "run_launcher" not in instance_config(Settings(dagster_run_launcher="default"))


def test_when_the_forkserver_starts_flows_from_the_setting_through_dagsters_config_check() -> None:
    for start in ("first_run", "daemon_start"):
        block = instance_config(Settings(run_workers_start=start))["run_launcher"]
        config = configurable_class_config(block["module"], block["class"], block["config"])
        assert ForkingRunLauncher.from_config_value(None, config).forkserver_start == start
        # with `daemon_start` the coordinator builds the launcher as the daemon starts; else Dagster's own
        coordinator = instance_config(Settings(run_workers_start=start))["run_coordinator"]
        configurable_class_config(coordinator["module"], coordinator["class"], coordinator["config"])
        expected = "PreforkingRunCoordinator" if start == "daemon_start" else "QueuedRunCoordinator"
        assert coordinator["class"] == expected
    # a launcher block without it (written by hand, or before the setting) starts it with the first run
    config = configurable_class_config(FORKING_RUN_LAUNCHER["module"], FORKING_RUN_LAUNCHER["class"], {})
    assert ForkingRunLauncher.from_config_value(None, config).forkserver_start == "first_run"


def test_a_worker_names_itself_in_its_runs_tags_before_the_run_starts(tmp_path: Path) -> None:
    """The worker records its pid itself, first of all: a daemon killed right after forking it leaves a
    run that still names its worker, so run monitoring can tell when that worker dies."""
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        run = instance.add_run(
            DagsterRun(job_name="nowhere_job", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTING)
        )
        worker = multiprocessing.get_context("fork").Process(
            target=work, args=(serialize_value(instance.get_ref()), run.run_id)
        )
        worker.start()
        started = psutil.Process(worker.pid).create_time()
        worker.join(60)
        assert worker.exitcode is not None, "the worker did not finish"
        tags = not_none(instance.get_run_by_id(run.run_id)).tags
    assert tags[PID_TAG] == str(worker.pid)
    assert abs(float(tags[STARTED_TAG]) - started) < 0.01


def test_a_run_canceled_while_its_step_waits_to_retry_ends_within_the_grace(tmp_path: Path) -> None:
    """A step waiting to retry sleeps through interrupts; Terminate (CANCELING) still ends the run and its
    worker within the grace, not when the retry is due ten minutes later."""
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        run = instance.create_run_for_job(
            job_def=retrying_job,
            job_code_origin=reconstructable(retrying_job).get_python_origin(),
            status=DagsterRunStatus.STARTING,
        )
        worker = multiprocessing.get_context("fork").Process(
            target=work, args=(serialize_value(instance.get_ref()), run.run_id)
        )
        worker.start()

        def asked_to_retry() -> bool:
            if instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY).records:
                return True
            assert worker.is_alive(), "the worker ended before its step asked to retry"
            return False

        wait_until(asked_to_retry, 120, interval_s=0.2, what="the step to ask to retry")
        instance.report_run_canceling(not_none(instance.get_run_by_id(run.run_id)))
        canceling = time.monotonic()
        worker.join(CANCELED_WITHIN_S)
        ended_s = time.monotonic() - canceling
        assert worker.exitcode is not None, "the worker still runs"
        final = not_none(instance.get_run_by_id(run.run_id))
        canceled = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.PIPELINE_CANCELED)
    assert final.status == DagsterRunStatus.CANCELED
    assert ended_s < CANCELED_WITHIN_S
    event = not_none(canceled.records[0].event_log_entry.dagster_event)
    assert "first interrupted" in (event.message or "")


WARM_PROBE = """
import sys, threading, time
from multiprocessing import forkserver
sys.argv[0] = sys.argv[1]
from dagster_project.run_launcher import ForkingRunLauncher
ForkingRunLauncher(forkserver_start=sys.argv[2])
starting = [t for t in threading.enumerate() if t.name == "forkserver-start"]
deadline = time.monotonic() + 120
while starting and forkserver._forkserver._forkserver_pid is None and time.monotonic() < deadline:
    time.sleep(0.1)
for thread in starting:
    thread.join(120)
pid = forkserver._forkserver._forkserver_pid
if pid is not None:
    import psutil
    assert "forkserver" in " ".join(psutil.Process(pid).cmdline()), psutil.Process(pid).cmdline()
print(pid)
"""


def test_the_daemon_starts_the_forkserver_with_its_launcher_only_when_told_and_no_other_program_does() -> (
    None
):
    """With `daemon_start`, the daemon's forkserver is up before its first run; with `first_run` the
    daemon starts none with its launcher, nor does a webserver or run worker that builds the launcher."""
    for program, start, expected in (
        ("/venv/bin/dagster-daemon", "daemon_start", True),
        ("/venv/bin/dagster-daemon", "first_run", False),
        ("/venv/bin/dagster-webserver", "daemon_start", False),
    ):
        probe = subprocess.run(
            [sys.executable, "-c", WARM_PROBE, program, start],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        pid = probe.stdout.strip().splitlines()[-1]
        assert (pid != "None") == expected, (program, start, probe.stdout, probe.stderr)


WORKER_PROBE = '''
import multiprocessing, sys
sys.argv[0] = "/venv/bin/dagster-daemon"  # multiprocessing gives a worker its parent's argv
BUILD = """
import threading
from dagster_project.run_launcher import ForkingRunLauncher
ForkingRunLauncher(forkserver_start="daemon_start")
print(sorted(thread.name for thread in threading.enumerate()), flush=True)
"""
if __name__ == "__main__":
    worker = multiprocessing.get_context("forkserver").Process(target=exec, args=(BUILD,))
    worker.start()
    worker.join(120)
    assert worker.exitcode == 0, worker.exitcode
'''


def _run_probe(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`code` run by a Python of its own from the repository's root; it must exit 0."""
    probe = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert probe.returncode == 0, probe.stderr
    return probe


def test_a_run_worker_forked_by_the_daemons_forkserver_starts_no_forkserver_of_its_own() -> None:
    """A worker has the daemon's `sys.argv`; the launcher it builds must not take it for the daemon."""
    probe = _run_probe(WORKER_PROBE)
    threads = probe.stdout.strip().splitlines()[-1]
    assert "MainThread" in threads and "forkserver-start" not in threads, (probe.stdout, probe.stderr)


LAUNCH_PROBE = """
import sys, threading, uuid
import psutil
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
from dagster_project.dagster_internals import LaunchRunContext
sys.argv[0] = "/venv/bin/dagster-daemon"
from dagster_project.run_launcher import PID_TAG, ForkingRunLauncher
from tests.support.processes import forkservers
from tests.support.waiting import wait_until

with DagsterInstance.from_config(sys.argv[1]) as instance:
    launcher = ForkingRunLauncher(forkserver_start="first_run")
    launcher.register_instance(instance)
    assert not forkservers(psutil.Process().pid), "a forkserver before the first run"
    runs = [
        instance.add_run(
            DagsterRun(job_name="nowhere_job", run_id=str(uuid.uuid4()), status=DagsterRunStatus.STARTING)
        )
        for _ in range(2)
    ]
    errors = []

    def launch(run):
        try:
            launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    servers = forkservers(psutil.Process().pid)
    workers = [
        wait_until(lambda: instance.get_run_by_id(run.run_id).tags.get(PID_TAG), 120, what="a worker's pid")
        for run in runs
    ]
    print(len(servers), len(set(workers)))
"""


def test_the_first_runs_launched_at_once_start_one_forkserver_and_each_its_worker(tmp_path: Path) -> None:
    """With `first_run`, two runs launched at once by a daemon that has no forkserver yet: one forkserver
    starts (multiprocessing starts it under a lock), and both runs' workers are forked from it."""
    probe = _run_probe(LAUNCH_PROBE, str(tmp_path))
    assert probe.stdout.split() == ["1", "2"], (probe.stdout, probe.stderr)
