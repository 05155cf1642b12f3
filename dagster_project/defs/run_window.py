"""The run's window: the one channel by which assets and checks learn the arrival range a run processes.

The sensor configures it per run (`run_config_for`: `resources.window.config`); nothing else carries the
range, and the run's tags only show it. With several stream shards each run also carries its shard and
reads only that shard's stream. A run without it (a backfill, a materialization from the UI)
takes its partitions' hours as far as they have closed. The sensor reads it back from unfinished runs
(`configured_range`) to know which ranges they hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dagster import ConfigurableResource, Failure, PartitionKeyRange
from pydantic import Field

from dagster_project.lib.windows import Window, hours_window

#: The resource key under which assets and checks receive the window.
RESOURCE_KEY = "window"


class RunWindowResource(ConfigurableResource):
    """The exact arrival range [start_ms, end_ms) of a micro-batch run (Redis clock); 0/0 for a run of
    whole partitions (backfills, UI runs)."""

    start_ms: int = Field(default=0, description="Start of the run's arrival range (ms); 0: whole hours.")
    end_ms: int = Field(default=0, description="End of the run's arrival range (ms); 0: whole hours.")
    shard: int | None = Field(
        default=None, description="The one stream shard the run reads; none: every stream."
    )

    @property
    def configured(self) -> Window | None:
        """The range the sensor gave the run, None for a run of whole partitions."""
        if not self.start_ms and not self.end_ms:
            return None
        return Window(self.start_ms, self.end_ms)

    def resolve(self, keys: PartitionKeyRange, closed_until_ms: Callable[[], int]) -> Window:
        """The range the run processes: the configured one, checked to lie in the run's partitions; else
        the partitions' hours as far as they have closed (an open hour up to its last closed moment)."""
        hours = hours_window(keys.start, keys.end)
        configured = self.configured
        if configured is None:
            return hours.until(closed_until_ms())
        if not (hours.start_ms <= configured.start_ms < configured.end_ms <= hours.end_ms):
            raise Failure(
                f"configured range {configured.start_ms}..{configured.end_ms} is not inside partition(s) "
                f"{keys.start}..{keys.end}",
                allow_retries=False,
            )
        return configured

    def streams_of(self, streams: list[str]) -> list[str]:
        """Of all the raw `streams` (in shard order), those the run reads: its shard's, else all."""
        if self.shard is None:
            return streams
        if not 0 <= self.shard < len(streams):
            raise Failure(
                f"the run's shard {self.shard} is not one of the {len(streams)} stream(s)",
                allow_retries=False,
            )
        return [streams[self.shard]]

    def hours_so_far(self, keys: PartitionKeyRange, closed_until_ms: Callable[[], int]) -> Window:
        """What a check of the run's hours judges: the hours up to the end of the configured range, or up
        to what has closed for a run of whole partitions."""
        hours = hours_window(keys.start, keys.end)
        configured = self.configured
        return hours.until(configured.end_ms if configured else closed_until_ms())


def run_config_for(window: Window, shard: int | None = None) -> dict[str, Any]:
    """The run config that gives a run `window` (of `shard` only, if given)."""
    config: dict[str, Any] = {"start_ms": window.start_ms, "end_ms": window.end_ms}
    if shard is not None:
        config["shard"] = shard
    return {"resources": {RESOURCE_KEY: {"config": config}}}


def configured_shard(run_config: Mapping[str, Any]) -> int | None:
    """The shard a run's config gives it (`run_config_for`), None for a run of every stream."""
    resources = run_config.get("resources") or {}
    shard = ((resources.get(RESOURCE_KEY) or {}).get("config") or {}).get("shard")
    return None if shard is None else int(shard)


def configured_range(run_config: Mapping[str, Any]) -> tuple[int, int] | None:
    """The range a run's config gives it (`run_config_for`), None for a run of whole partitions."""
    resources = run_config.get("resources") or {}
    config = (resources.get(RESOURCE_KEY) or {}).get("config") or {}
    start_ms, end_ms = int(config.get("start_ms") or 0), int(config.get("end_ms") or 0)
    return (start_ms, end_ms) if start_ms or end_ms else None
