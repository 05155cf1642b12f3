"""The lines `up` prints while it runs: one per processed window (from the `batches` table) and one per
failed Dagster run (from the Dagster instance), each saying what happened in words a user reads.

Windows are shown in UTC (the partitions' and the run tags' clock), without the date when it is today's.
The lag is the age of the window's oldest message when its data became queryable: the batch's
`finished_at` minus `oldest_arrival` (the window's end for a window without messages). A run that took
several windows at once shows how long its first message waited, not how long after the last window closed.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from iot_core.settings import Settings
from iot_etl.dagster_instance import instance_config

# a batch row committed late (its transaction began before one already shown) is still found
_LATE_COMMIT = timedelta(minutes=2)
_WINDOW_TAG = "iot/window"
POLL_S = 2.0


@dataclass(frozen=True, slots=True)
class WindowDone:
    batch_id: int
    start: datetime
    end: datetime
    messages: int
    stored: int
    rejected: int
    duplicates: int
    finished_at: datetime
    oldest_arrival: datetime | None = None
    #: the backfill whose run wrote the batch: its range is what it re-processed, not a live window
    backfill: str | None = None
    #: the stream shard the batch read, when each shard's windows have runs of their own
    shard: int | None = None

    def line(self, today: datetime) -> str:
        lag = (self.finished_at - (self.oldest_arrival or self.end)).total_seconds()
        what = f"backfill {self.backfill}" if self.backfill else "window"
        shard = f" shard {self.shard}" if self.shard is not None else ""
        text = (
            f"{what} {human_window(_label(self.start, self.end), today)}{shard}  messages {self.messages}  "
            f"stored {self.stored}  rejected {self.rejected}"
        )
        if self.duplicates:
            text += f"  duplicates {self.duplicates}"
        return f"{text}  lag {lag:.1f} s"


@dataclass(frozen=True, slots=True)
class RunFailed:
    run_id: str
    job: str
    window: str | None
    partition: str | None
    step: str | None
    error: str
    retry: int
    max_retries: int

    def line(self, today: datetime, ui_url: str, heal_after_s: int) -> str:
        what = f"window {human_window(self.window, today)}" if self.window else f"run of {self.job}"
        if not self.window and self.partition:
            what += f" (hour {self.partition})"
        where = f"step {self.step}: " if self.step else ""
        if self.retry < self.max_retries:
            todo = f"Dagster retries it ({self.retry + 1} of {self.max_retries})"
        elif self.window:
            todo = (
                f"no retry left: the sensor runs the window again {heal_after_s} s after it closed "
                "(IOT_SENSOR_HEAL_AFTER_S); fix the cause named in the run's log"
            )
        else:
            todo = "no retry left: fix the cause named in the run's log and launch it again in the UI"
        return (
            f"{what}  FAILED in run {self.run_id[:8]}: {where}{self.error}; {todo}: "
            f"{ui_url}/runs/{self.run_id}"
        )


def _label(start: datetime, end: datetime) -> str:
    # imported here: the code location's package imports Dagster, which `up` must not wait for when it
    # only refuses to start
    from dagster_project.lib.windows import Window

    return Window(int(start.timestamp() * 1000), int(end.timestamp() * 1000)).short_label


def human_window(label: str, today: datetime) -> str:
    """`2026-11-29 15:41:00-15:42:00` -> `15:41:00-15:42:00` when that is today (UTC)."""
    prefix = f"{today.astimezone(UTC):%Y-%m-%d} "
    return label.removeprefix(prefix) if label.startswith(prefix) else label


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no error message"


class WindowFeed:
    """Batches finished since the feed began, each once."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._since: datetime | None = None
        self._seen: dict[int, datetime] = {}

    def poll(self) -> list[WindowDone]:
        with psycopg.connect(self.database_url, connect_timeout=5, autocommit=True) as conn:
            if self._since is None:
                row = conn.execute("SELECT clock_timestamp()").fetchone()
                assert row is not None
                self._since = row[0]
                return []
            rows = conn.execute(
                """SELECT batch_id, range_start, range_end, raw_count, measurement_count + event_count,
                          rejected_count, duplicate_count, finished_at, oldest_arrival, backfill, shard
                   FROM batches WHERE finished_at >= %s ORDER BY finished_at, batch_id""",
                (self._since,),
            ).fetchall()
        done = [WindowDone(*row) for row in rows if row[0] not in self._seen]
        self._seen.update((d.batch_id, d.finished_at) for d in done)
        if done:
            horizon = max(d.finished_at for d in done) - _LATE_COMMIT
            self._since = max(self._since, horizon)
            self._seen = {b: f for b, f in self._seen.items() if f >= self._since}
        return done


class FailureFeed:
    """Dagster runs that failed since the feed began, each once, asked of the webserver the way the UI asks
    (GraphQL): `up` itself then never imports Dagster, which would hold about 100 MB of its memory for as
    long as it runs. `max_retries` is the instance's `run_retries` setting."""

    def __init__(self, ui_url: str, max_retries: int) -> None:
        self.ui_url = ui_url
        self.max_retries = max_retries
        self._since = datetime.now(UTC)
        self._seen: set[str] = set()

    def poll(self) -> list[RunFailed]:
        after = (self._since - _LATE_COMMIT).timestamp()
        runs = _ask(self.ui_url, _FAILED_RUNS, {"after": after})["runsOrError"]
        if runs["__typename"] != "Runs":
            raise RuntimeError(first_line(runs.get("message", runs["__typename"])))
        fresh = [r for r in runs["results"] if r["runId"] not in self._seen]
        failed = [self._failure(r) for r in sorted(fresh, key=lambda r: r["updateTime"] or 0.0)]
        self._seen.update(f.run_id for f in failed)
        return failed

    def _failure(self, run: dict) -> RunFailed:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        run_id: str = run["runId"]
        step, error = None, "the run failed"
        logs = _ask(self.ui_url, _RUN_FAILURES, {"runId": run_id})["logsForRun"]
        events = logs.get("events", []) if logs["__typename"] == "EventConnection" else []
        failures = [e for e in events if e["__typename"] in _FAILURE_EVENTS]
        for event in sorted(failures, key=lambda e: e["__typename"] != "ExecutionStepFailureEvent"):
            info = event.get("error")
            # Dagster wraps the op's own exception: the innermost cause names it
            causes = info["causes"] if info else []
            message = (causes[-1] if causes else info)["message"] if info else event["message"]
            step = event.get("stepKey")
            # an error's message starts with its exception's qualified name
            error = first_line(message or event["message"])
            break
        return RunFailed(
            run_id=run_id,
            job=run["jobName"],
            window=tags.get(_WINDOW_TAG),
            partition=tags.get("dagster/partition"),
            step=step,
            error=error,
            retry=int(tags.get("dagster/retry_number", 0)),
            max_retries=self.max_retries,
        )


_FAILURE_EVENTS = ("ExecutionStepFailureEvent", "RunFailureEvent")
_FAILED_RUNS = """query FailedRuns($after: Float) {
  runsOrError(filter: {statuses: [FAILURE], updatedAfter: $after}, limit: 100) { __typename
    ... on Runs { results { runId jobName updateTime tags { key value } } }
    ... on PythonError { message } } }"""
_RUN_FAILURES = """query RunFailures($runId: ID!) {
  logsForRun(runId: $runId) { __typename
    ... on EventConnection { events { __typename
        ... on MessageEvent { message }
        ... on ExecutionStepFailureEvent { stepKey error { message causes { message } } }
        ... on RunFailureEvent { error { message causes { message } } } } } } }"""


def _ask(ui_url: str, query: str, variables: dict) -> dict:
    """One GraphQL query to the webserver; its `data`. Raises OSError while the webserver does not answer."""
    request = urllib.request.Request(
        f"{ui_url}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10.0) as response:
        answer = json.load(response)
    if answer.get("errors"):
        raise RuntimeError(first_line(answer["errors"][0].get("message", "GraphQL error")))
    return answer["data"]


class WindowReporter:
    """Polls both feeds every `POLL_S` in a thread of its own and shows each new line; a poll that fails
    (the database away) is one line, and one more when the lines resume."""

    def __init__(self, settings: Settings, ui_url: str, show: Callable[[str], None]) -> None:
        self.settings = settings
        self.ui_url = ui_url
        self.show = show
        self.windows = WindowFeed(settings.database_url.get_secret_value())
        self.failures = FailureFeed(ui_url, instance_config(settings)["run_retries"]["max_retries"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="window-report", daemon=True)
        self.windows.poll()  # from here on

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Without waiting for a poll in flight (a daemon thread): stopping `up` must stay quick."""
        self._stop.set()

    def poll(self) -> list[str]:
        """Everything new since the last call, windows first."""
        today = datetime.now(UTC)
        lines = [w.line(today) for w in self.windows.poll()]
        lines += [f.line(today, self.ui_url, self.settings.sensor_heal_after_s) for f in self.failures.poll()]
        return lines

    def _run(self) -> None:
        paused: str | None = None
        while not self._stop.wait(POLL_S):
            try:
                lines = self.poll()
            except Exception as exc:  # reporting must never stop the pipeline
                if self._stop.is_set():
                    return  # `up` is stopping the services it polls
                reason = f"window lines paused: {type(exc).__name__}: {first_line(str(exc))}"
                if reason != paused:
                    self.show(reason)
                    paused = reason
                continue
            if paused is not None:
                self.show("window lines resumed")
                paused = None
            for line in lines:
                self.show(line)
