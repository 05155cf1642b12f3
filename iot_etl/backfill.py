"""`iot-etl backfill`: launch a Dagster backfill of `raw_messages`, `telemetry` and `hourly_rollups` over a
range of hour partitions through the running webserver's GraphQL API, and follow it to its end.

The hour-assets are materialized before the backfill ends: each run goes on with the checks of its hours,
and the backfill ends when its last run does. While the assets are done and runs are not, the progress
says which runs and steps it waits for."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from iot_core.errors import UserFacingError
from iot_core.settings import Settings

ASSETS = ("raw_messages", "telemetry", "hourly_rollups")
#: How long `backfill` waits for a webserver that has just started to load the code location.
LOAD_TIMEOUT_S = 300.0
#: How many of a backfill's unfinished runs the progress names.
RUNS_SHOWN = 3
KEY_FORMAT = "%Y-%m-%d-%H:%M"  # the hourly partitions' key format
FINISHED_OK = {"COMPLETED", "COMPLETED_SUCCESS"}
FINISHED_BAD = {"FAILED", "COMPLETED_FAILED", "CANCELED"}

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

FOLLOW = """
query Follow($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions partitionNames
      error { message }
      unfinishedRuns(limit: 3) { id status stepStats { stepKey status } }
      assetBackfillData { assetBackfillStatuses {
        ... on AssetPartitionsStatusCounts {
          assetKey { path }
          numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
        }
      } }
    }
    ... on Error { message }
  }
}
"""


def ui_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.webserver_host in ("0.0.0.0", "::") else settings.webserver_host
    return f"http://{host}:{settings.webserver_port}"


def parse_hour(text: str) -> datetime:
    """An hour (UTC) from a partition key (`2026-03-01-14:00`) or ISO-8601 (`2026-03-01T14`,
    `2026-03-01 14:00Z`; naive = UTC); minutes and seconds are dropped (the hour containing it)."""
    raw = text.strip()
    try:
        when = datetime.strptime(raw, KEY_FORMAT)
    except ValueError:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise UserFacingError(
                f"{text!r} is not an hour",
                "give one like 2026-03-01T14 or the partition key 2026-03-01-14:00",
            ) from None
    when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return when.replace(minute=0, second=0, microsecond=0)


def hour_keys(settings: Settings, first: datetime, last: datetime) -> list[str]:
    """The partition keys of every hour from `first` to `last`, both included, checked against the
    partitions that exist (from the partitions' start, as the code location builds it, to the open hour)."""
    from dagster_project.defs.partitions import build_hourly_partitions, read_partitions_start

    if last < first:
        raise UserFacingError(f"--to {last:{KEY_FORMAT}} is before --from {first:{KEY_FORMAT}}", "swap them")
    # a start that cannot be read is not checked here: the webserver refuses keys it does not have
    first_key, unknown = read_partitions_start(settings)
    start = datetime.strptime(first_key, KEY_FORMAT).replace(tzinfo=UTC)
    newest = build_hourly_partitions(first_key).get_last_partition_key()
    end = datetime.strptime(newest, KEY_FORMAT).replace(tzinfo=UTC) if newest else start
    if (first < start and unknown is None) or last > end:
        raise UserFacingError(
            f"hours {first:{KEY_FORMAT}}..{last:{KEY_FORMAT}} are outside the partitions "
            f"({first_key}..{end:{KEY_FORMAT}})",
            "choose hours within them (IOT_PARTITIONS_START moves their start back)",
        )
    hours = int((last - first) / timedelta(hours=1)) + 1
    return [(first + timedelta(hours=i)).strftime(KEY_FORMAT) for i in range(hours)]


class DagsterUi:
    """The running Dagster webserver's GraphQL endpoint."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def wait_loaded(self, timeout_s: float = LOAD_TIMEOUT_S, poll_s: float = 1.0) -> None:
        """Until the webserver has loaded the code location (a webserver that has just started answers
        before it has, and refuses a launch meanwhile); its loading error, or a timeout, in one line."""
        from iot_etl.code_location import location_state

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                state = location_state(self.base_url)
            except urllib.error.HTTPError as exc:  # a server error while it loads: ask again
                if exc.code < 500:
                    raise self._unreachable(exc.reason) from exc
                state = None
            except OSError as exc:
                raise self._unreachable(getattr(exc, "reason", exc)) from exc
            if state is not None and state.error:
                raise UserFacingError(
                    f"the Dagster webserver could not load the code location: {state.error}",
                    "fix what it names and restart `iot-etl up`",
                )
            if state is not None and state.loaded:
                return
            if time.monotonic() > deadline:
                raise UserFacingError(
                    f"the Dagster webserver at {self.base_url} has not loaded the code location in "
                    f"{timeout_s:.0f} s",
                    "see the webserver's log (`iot-etl up` names the logs folder) and try again",
                )
            time.sleep(poll_s)

    def query(self, document: str, variables: dict) -> dict:
        body = self._post({"query": document, "variables": variables})
        if body.get("errors"):
            raise UserFacingError(
                f"the Dagster webserver refused the request: {body['errors'][0].get('message', '')}",
                "check that it serves this project's code location (workspace.yaml)",
            )
        return body["data"]

    def _post(self, payload: dict) -> dict:
        """POST to /graphql. A server error (5xx: e.g. the webserver answers while its code location is
        still loading) is asked again with backoff until `timeout_s` has passed. A launch that is asked
        twice because its first answer was lost re-processes the same hours, which is idempotent."""
        request = urllib.request.Request(
            f"{self.base_url}/graphql",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        deadline = time.monotonic() + self.timeout_s
        pause = 0.5
        while True:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or time.monotonic() + pause > deadline:
                    raise self._unreachable(exc.reason) from exc
            except (urllib.error.URLError, OSError) as exc:
                raise self._unreachable(getattr(exc, "reason", exc)) from exc
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _unreachable(self, reason: object) -> UserFacingError:
        return UserFacingError(
            f"Dagster webserver unreachable at {self.base_url} ({reason})",
            "start it with `iot-etl up` or point IOT_WEBSERVER_HOST/IOT_WEBSERVER_PORT at it",
        )


@dataclass(frozen=True, slots=True)
class BackfillState:
    backfill_id: str
    status: str
    targeted: int  # asset partitions: hours x assets
    done: int  # materialized
    failed: int
    in_progress: int
    error: str = ""
    #: what the backfill waits for once its hour-assets are done: `run <id> <step>` of unfinished runs
    waiting: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status in FINISHED_OK

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_OK | FINISHED_BAD

    @property
    def assets_done(self) -> bool:
        return self.targeted > 0 and self.done + self.failed >= self.targeted

    def waiting_for(self) -> str:
        """What an unfinished backfill whose hour-assets are done waits for, in words."""
        if self.finished or not self.assets_done:
            return ""
        runs = ", ".join(self.waiting) if self.waiting else "Dagster to mark it finished"
        return f"waiting for {runs}"

    def line(self) -> str:
        text = (
            f"backfill {self.backfill_id} {self.status}: {self.done}/{self.targeted} hour-assets "
            f"materialized, {self.in_progress} in progress, {self.failed} failed"
        )
        return f"{text}; {self.waiting_for()}" if self.waiting_for() else text


def launch(ui: DagsterUi, keys: list[str], title: str) -> str:
    """Launch the backfill; returns its id."""
    params = {
        "partitionNames": keys,
        "assetSelection": [{"path": [asset]} for asset in ASSETS],
        "fromFailure": False,
        "title": title,
    }
    result = ui.query(LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise UserFacingError(
            f"Dagster did not launch the backfill ({result['__typename']}: {result.get('message', '')})",
            "check the hours and that the webserver serves this project",
        )
    return str(result["backfillId"])


def state(ui: DagsterUi, backfill_id: str) -> BackfillState:
    node = ui.query(FOLLOW, {"id": backfill_id})["partitionBackfillOrError"]
    if node["__typename"] != "PartitionBackfill":
        raise UserFacingError(
            f"backfill {backfill_id} not found ({node.get('message', node['__typename'])})",
            "list backfills in the Dagster UI under Runs > Backfills",
        )
    counts = [s for s in (node.get("assetBackfillData") or {}).get("assetBackfillStatuses", []) if s]
    return BackfillState(
        backfill_id=backfill_id,
        status=node["status"],
        targeted=sum(s["numPartitionsTargeted"] for s in counts),
        done=sum(s["numPartitionsMaterialized"] for s in counts),
        failed=sum(s["numPartitionsFailed"] for s in counts),
        in_progress=sum(s["numPartitionsInProgress"] for s in counts),
        error=((node.get("error") or {}).get("message") or "").strip(),
        waiting=tuple(run_waits(run) for run in (node.get("unfinishedRuns") or [])[:RUNS_SHOWN]),
    )


def run_waits(run: dict) -> str:
    """`run <id> <steps in progress>` (its checks, after the assets), or its status before it started."""
    steps = [s["stepKey"] for s in run.get("stepStats") or [] if s.get("status") == "IN_PROGRESS"]
    doing = ", ".join(steps) if steps else str(run.get("status", "")).lower()
    return f"run {str(run['id'])[:8]} ({doing})"


def follow(
    ui: DagsterUi,
    backfill_id: str,
    on_change: Callable[[BackfillState], None],
    poll_s: float = 2.0,
) -> BackfillState:
    """Poll the backfill until it has finished; `on_change` sees every new state."""
    last: BackfillState | None = None
    while True:
        now = state(ui, backfill_id)
        if now != last:
            on_change(now)
            last = now
        if now.finished:
            return now
        time.sleep(poll_s)
