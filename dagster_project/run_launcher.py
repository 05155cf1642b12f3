"""A run launcher that forks each run worker from a process that has Dagster and the pipeline's libraries
imported already.

Dagster's default launcher asks the code server to *spawn* a fresh interpreter for every run, which then
imports Dagster, polars, pandera, psycopg and the code location: about a second of CPU per run on a quiet
machine and tens of seconds on a loaded one, paid by every micro-batch however small. Here the daemon
starts one multiprocessing forkserver, with the libraries (not the code location, so that an edited
decoder is what the next run uses) imported once, and each run worker is forked from it and executes the
run as `dagster api execute_run` does.

The forkserver and multiprocessing's resource tracker, which starts with it, hold about 200 MB. By default
(`forkserver_start: first_run`) the first run launched starts them and waits for the imports, so a stack
that has run nothing holds neither; `daemon_start` starts them in a thread as the daemon starts, so that
no run waits. (Dagster builds an instance's run launcher when it first uses it, at the first run: with
`daemon_start` the instance's run coordinator is `PreforkingRunCoordinator`, which builds it as the daemon
starts.) Runs launched while the forkserver starts wait for the same one: multiprocessing starts it
under a lock (`forkserver.ensure_running`), and a worker's start returns once the forkserver has forked
it, after its imports.

The worker's pid and start time are kept in the run's hidden tags (stored with the run, left out of the
runs list and GraphQL), so the run-monitoring daemon can tell a worker that died (killed, out of memory)
from one that is working and fail the run within a poll, instead of waiting for the runtime bound. Workers
are in the daemon's process group: stopping `up` interrupts them as it did the code server's workers;
Dagster then records the run as failed and the sensor runs its window again.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

import psutil
from dagster import DagsterRun, Enum, EnumValue, Field, QueuedRunCoordinator, serialize_value

from dagster_project.dagster_internals import (
    FORKSERVER_PRELOAD,
    HIDDEN_TAG_PREFIX,
    CheckRunHealthResult,
    ConfigurableClass,
    ConfigurableClassData,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
    execute_run,
    require_modules,
    worker_instance,
)

#: Imported once by the forkserver; every worker starts with them. Each must exist: the forkserver would
#: skip a missing one without a word, so the launcher refuses to start it (`require_modules`).
PRELOAD = (
    "dagster",
    *FORKSERVER_PRELOAD[:2],
    "polars",
    "pandera.polars",
    "pandera.backends.polars.builtin_checks",  # imported when a schema is built (with hypothesis, if present)
    "psycopg",
    "psycopg_pool",
    "redis",
    "paho.mqtt.client",
    "pydantic_settings",
    "structlog",
    "numpy",
    # the instance's storage, which every worker opens
    *FORKSERVER_PRELOAD[2:],
    "dagster_postgres",
)
#: The run's worker (pid, and its start time against pid reuse): bookkeeping, hidden from the runs list.
PID_TAG = f"{HIDDEN_TAG_PREFIX}iot_worker_pid"
#: How often a worker looks whether its run is being canceled.
CANCEL_POLL_S = 2.0
#: How long a CANCELING run may go on being interrupted before its worker ends it itself.
CANCEL_GRACE_S = 15.0
STARTED_TAG = f"{HIDDEN_TAG_PREFIX}iot_worker_started"

#: The program that launches runs: it checks the preload list as it starts, and with `DAEMON_START` starts
#: the forkserver then, not when its first run is due.
LAUNCHING_PROGRAM = "dagster-daemon"
#: When the forkserver starts (the launcher's config `forkserver_start`, IOT_RUN_WORKERS_START).
FIRST_RUN = "first_run"
DAEMON_START = "daemon_start"

logger = logging.getLogger(__name__)
_context_lock = threading.Lock()
_context: ForkServerContext | None = None


def forkserver_context(preload: Sequence[str]) -> ForkServerContext:
    """A forkserver context that imports `preload` when it starts; DagsterInternalsError when a module of
    it is missing (the forkserver itself would skip it without a word)."""
    require_modules(preload)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


def in_launching_program() -> bool:
    """Whether this process is the daemon itself. A run worker forked from the forkserver has the daemon's
    `sys.argv` too (multiprocessing gives its children their parent's), and builds the instance's launcher
    and run coordinator when it uses them: taken for the daemon, each worker started a forkserver of its own
    and imported `PRELOAD` again, a third of the run workers' CPU at 5,000 msg/s."""
    return Path(sys.argv[0]).name == LAUNCHING_PROGRAM and multiprocessing.parent_process() is None


def _forkserver() -> ForkServerContext:
    global _context
    with _context_lock:
        if _context is None:
            _context = forkserver_context(PRELOAD)
        return _context


def import_preloaded() -> None:
    """Import in this process what every run worker starts with (`PRELOAD`): a measurement of a run's
    steps should not count these imports. A module that does not import is an error."""
    for name in PRELOAD:
        importlib.import_module(name)


def start_forkserver() -> None:
    """Start the forkserver (its imports take a CPU-second or more) if it is not running."""
    _forkserver()
    forkserver.ensure_running()


def work(instance_ref: str, run_id: str) -> None:
    """The run worker: what `dagster api execute_run` does with the run, plus a watcher that interrupts
    the run while its status is CANCELING (the UI's Terminate, from any process or container that shares
    the instance)."""
    with worker_instance(instance_ref) as instance:
        # before the run starts: a STARTED run always names its worker, even if the daemon that forked it
        # died at once (a worker that dies before this is a run that never started: the start timeout)
        me = psutil.Process()
        instance.add_run_tags(run_id, {PID_TAG: str(me.pid), STARTED_TAG: repr(me.create_time())})
        done = threading.Event()
        watcher = threading.Thread(
            target=_interrupt_while_canceling, args=(instance, run_id, done), name="cancel-watch", daemon=True
        )
        watcher.start()
        try:
            execute_run(run_id, instance)
        finally:
            done.set()
            watcher.join(timeout=5)


def _interrupt_while_canceling(instance: Any, run_id: str, done: threading.Event) -> None:
    """SIGINT to this worker every `CANCEL_POLL_S` while the run is CANCELING. Once is not enough: a step
    with a retry policy takes an interrupt as a reason to retry (Dagster's rule), and only an interrupt
    outside the step ends the run as canceled. (Dagster's own cancellation thread interrupts once, and
    polls every 10 s.)

    A step waiting to retry sleeps through interrupts until its retry is due, which may be minutes away.
    A run still CANCELING `CANCEL_GRACE_S` after the first interrupt is therefore recorded CANCELED here
    and the worker exits: its open transactions roll back with their connections, and the sensor runs
    the window again as after any canceled run."""
    from dagster import DagsterRunStatus

    canceling_since: float | None = None
    while not done.wait(CANCEL_POLL_S):
        try:
            run = instance.get_run_by_id(run_id)
        except Exception:  # the run storage busy or away: the next poll looks again
            logger.warning("could not read the status of run %s", run_id, exc_info=True)
            continue
        if run is None or run.status != DagsterRunStatus.CANCELING:
            continue
        canceling_since = canceling_since or time.monotonic()
        if time.monotonic() - canceling_since < CANCEL_GRACE_S:
            os.kill(os.getpid(), signal.SIGINT)
            continue
        if done.is_set():
            return
        instance.report_run_canceled(
            run,
            message=f"The run worker (pid {os.getpid()}) ended the run: it was still going "
            f"{CANCEL_GRACE_S:.0f} s after it was first interrupted (a step waiting to retry does not "
            "notice interrupts until the retry is due).",
        )
        os._exit(1)


class ForkingRunLauncher(RunLauncher, ConfigurableClass):
    """Run workers forked from a preloaded forkserver of the daemon; see the module's docstring."""

    def __init__(
        self, inst_data: ConfigurableClassData | None = None, forkserver_start: str = FIRST_RUN
    ) -> None:
        self._inst_data = inst_data
        self.forkserver_start = forkserver_start
        super().__init__()
        if in_launching_program():
            require_modules(PRELOAD)  # a missing one stops the daemon here, not a run later
            if forkserver_start == DAEMON_START:
                # the daemon's first run does not wait for the imports, nor does a burst pay for them
                threading.Thread(target=start_forkserver, name="forkserver-start", daemon=True).start()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict:
        return {
            "forkserver_start": Field(
                Enum("ForkserverStart", [EnumValue(FIRST_RUN), EnumValue(DAEMON_START)]),
                is_required=False,
                default_value=FIRST_RUN,
                description="When the run workers' forkserver starts: with the first run launched, or as "
                "the daemon starts.",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Any) -> ForkingRunLauncher:
        return cls(inst_data=inst_data, forkserver_start=config_value.get("forkserver_start", FIRST_RUN))

    def launch_run(self, context: LaunchRunContext) -> None:
        """Fork the run's worker; the first launch of a daemon whose forkserver is not running starts it
        and returns once the forkserver has imported `PRELOAD` and forked the worker."""
        run = context.dagster_run
        worker = _forkserver().Process(
            target=work,
            args=(serialize_value(self._instance.get_ref()), run.run_id),
            name=f"dagster-run-{run.run_id[:8]}",
            # not joined when the daemon exits: the daemon's process group ends with it (see above)
            daemon=True,
        )
        worker.start()  # the worker records its pid in the run's tags itself (see `work`)

    def terminate(self, run_id: str) -> bool:
        """CANCELING, which the worker's watcher acts on within its poll; a worker on this
        machine is interrupted at once as well (SIGTERM: an interrupt inside the step it runs)."""
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        process = _worker(run)
        if process is not None:
            process.terminate()
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if PID_TAG not in run.tags:
            # launched by another launcher (before an upgrade): only the runtime bound applies to it
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded")
        if _worker(run) is None:
            return CheckRunHealthResult(
                WorkerStatus.FAILED,
                f"its run worker (pid {run.tags[PID_TAG]}) exited without finishing the run "
                "(killed, or out of memory): see the daemon's log",
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING)


class PreforkingRunCoordinator(QueuedRunCoordinator):
    """Dagster's queued run coordinator that, in the daemon, builds the instance's run launcher as soon as
    it is itself built (the run queue's first pass, as the daemon starts), so that the forking launcher's
    `daemon_start` starts the forkserver then rather than at the first run."""

    def register_instance(self, instance: Any) -> None:
        super().register_instance(instance)
        if in_launching_program():
            _ = instance.run_launcher  # built, and registered with the instance, on first use


def _worker(run: DagsterRun) -> psutil.Process | None:
    """The run's worker process while it lives (a pid reused by another process does not count)."""
    try:
        process = psutil.Process(int(run.tags[PID_TAG]))
        if abs(process.create_time() - float(run.tags.get(STARTED_TAG, "0"))) > 0.01:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (KeyError, ValueError, psutil.NoSuchProcess):
        return None
    return process
