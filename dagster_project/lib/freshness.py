"""The freshness verdict: at a deadline tick, is the hour due materialized?"""

from dataclasses import dataclass
from datetime import UTC, datetime

# The one helper Dagster's own freshness checks use for "the latest tick of a cron before now".
from dagster_project.lib.windows import KEY_FORMAT


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    #: The partition key judged; None when no hour was due (the deadline precedes the partitions' start).
    hour_key: str | None


def due_hour(deadline: datetime) -> datetime:
    """The hour due at `deadline` (a tick of the deadline cron): the hour it falls in."""
    return deadline.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def judge(deadline: datetime, start: datetime, materialized: bool, ever_materialized: bool) -> Verdict:
    """The verdict at `deadline` on partitions from `start`: is the hour due materialized?"""
    due = due_hour(deadline)
    at = f"{deadline.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if due < start:
        first = start.strftime(KEY_FORMAT)
        return Verdict(True, f"No hour is due at the deadline {at}: the partitions start at {first}.", None)
    key = due.strftime(KEY_FORMAT)
    if materialized:
        return Verdict(True, f"Hour {key} has been materialized (deadline {at}).", key)
    if not ever_materialized:
        return Verdict(False, f"telemetry has never been materialized; hour {key} was due at {at}.", key)
    return Verdict(False, f"Hour {key} is overdue: not materialized by the deadline {at}.", key)
