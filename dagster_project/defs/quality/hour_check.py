"""One way to declare a check per hour partition: a name, a description and a body that judges an hour.

In a micro-batch run a check looks at its hour up to the end of the run's range (the run's window,
`RunWindowResource`), in a shard's run only as far as every shard is archived and decoded
(`settled_until_ms`): the hour's checks cover all shards, and the last shard's run judges the hour whole; run
on its own (from the UI, on any partition) it looks at the partition's hours as
far as they have closed. The body gets that
window with an open connection to the telemetry database, the quality thresholds and the raw streams.

No `from __future__ import annotations` here: Dagster reads the check function's annotations at
definition time to tell the context and the resources apart.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    PartitionsDefinition,
    asset_check,
)

from dagster_project.defs.ingest.shards import settled_until_ms
from dagster_project.defs.resources import (
    BatchPolicyResource,
    DatabaseResource,
    QualityPolicyResource,
    RedisStreamsResource,
)
from dagster_project.defs.run_window import RunWindowResource
from dagster_project.lib.verdicts import P, ReadFrom, judged_so_far
from dagster_project.lib.windows import BACKFILL_TAG, Window


@dataclass(frozen=True)
class CheckedHour:
    """What a check body judges: the window checked, and what it reads to judge it."""

    window: Window
    conn: psycopg.Connection
    quality: QualityPolicyResource
    redis: RedisStreamsResource
    #: the check's name, under which its verdicts are kept
    check: str
    #: a micro-batch run's check of its hour up to the end of the run's range: a check may then reuse its
    #: verdict over the hour's earlier part (see `verdicts`)
    so_far: bool = False
    #: a backfill's run: it judges its hours whole where a backfill (its own) has rewritten them
    backfill: bool = False

    def judged(
        self, judge: Callable[[datetime, datetime], P], keep: Callable[[P], bool] = lambda _: True
    ) -> tuple[P, ReadFrom]:
        """`judge` over the checked window, and where it began to read: in a micro-batch or backfill run
        only what follows the check's kept verdict of the hour (see `verdicts`), else the whole window."""
        start, end = self.window.utc_bounds
        if self.so_far:
            provisional = not self.backfill
            return judged_so_far(self.conn, self.check, start, end, judge, keep, provisional=provisional)
        return judge(start, end), ReadFrom(start)


CheckBody = Callable[[CheckedHour], AssetCheckResult]


@dataclass(frozen=True)
class HourCheck:
    """A check per hour partition, built on the partitions definition it is given (see `partitions`)."""

    asset: str
    name: str
    description: str
    blocking: bool
    body: CheckBody

    def build(self, partitions: PartitionsDefinition) -> AssetChecksDefinition:
        body, name = self.body, self.name
        # a check of the archive runs before its run decodes: it needs the other shards archived only
        decoded = self.asset != "raw_messages"

        @asset_check(
            asset=self.asset,
            name=name,
            partitions_def=partitions,
            blocking=self.blocking,
            description=self.description,
        )
        def hourly(
            context: AssetCheckExecutionContext,
            window: RunWindowResource,
            redis: RedisStreamsResource,
            database: DatabaseResource,
            policy: BatchPolicyResource,
            quality: QualityPolicyResource,
        ) -> AssetCheckResult:
            # the hours up to the end of the run's range (micro-batch runs), else up to what has closed
            checked = window.hours_so_far(context.partition_key_range, lambda: policy.closed_until_ms(redis))
            # micro-batch and backfill runs judge on from the kept verdict and keep theirs; a check run on
            # its own (from the UI) judges the hours afresh
            backfill = BACKFILL_TAG in context.run.tags
            so_far = window.configured is not None or backfill
            if window.shard is not None:  # another shard's window of the range may still be running
                with database.connect() as conn:
                    settled = settled_until_ms(conn, redis, checked.start_ms, checked.end_ms, decoded=decoded)
                    checked = checked.until(settled)
            with database.connect() as conn:  # fresh: a body may judge in a snapshot of its own
                return body(CheckedHour(checked, conn, quality, redis, name, so_far, backfill))

        return hourly


def hour_check(
    asset: str, name: str, description: str, *, blocking: bool = False
) -> Callable[[CheckBody], HourCheck]:
    """Decorator: the body becomes check `name` on `asset`, partitioned by arrival hour once built."""

    def declare(body: CheckBody) -> HourCheck:
        return HourCheck(asset, name, description, blocking, body)

    return declare
