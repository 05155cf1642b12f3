"""Micro-window arithmetic of the sensor (pure, no Dagster, no I/O).

Windows tile each hour (their length divides 3600 s) and are closed once Redis's clock is past their end
plus a grace. All closed windows of the open hour since the cursor become one run; an hour that has
closed entirely while we were behind becomes one run for its rest. While earlier runs are still going
(the pipeline is behind), open-hour windows wait and the next tick asks one run for all of them, so a
backlog drains in a few large runs instead of one run per window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from iot_core.streams import id_range, utc_from_ms

HOUR_MS = 3_600_000
PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
#: An hour partition's key, as `PARTITION_FORMAT` writes it for a whole hour.
KEY_FORMAT = "%Y-%m-%d-%H:00"
#: Dagster's tags of a run's partition, or of its partition range (a backfill run over several hours).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
#: Dagster's tag on the runs of a backfill (its id).
BACKFILL_TAG = "dagster/backfill"


@dataclass(frozen=True, slots=True)
class Window:
    start_ms: int
    end_ms: int

    @property
    def hour_start_ms(self) -> int:
        return self.start_ms - self.start_ms % HOUR_MS

    @property
    def partition_key(self) -> str:
        return utc_from_ms(self.hour_start_ms).strftime(PARTITION_FORMAT)

    @property
    def closes_hour(self) -> bool:
        return self.end_ms == self.hour_start_ms + HOUR_MS

    @property
    def whole_hour(self) -> bool:
        return self.start_ms == self.hour_start_ms and self.closes_hour

    @property
    def label(self) -> str:
        """`<start> .. <end>` in ISO-8601 UTC, for run metadata."""
        return " .. ".join(utc_from_ms(ms).isoformat() for ms in (self.start_ms, self.end_ms))

    @property
    def short_label(self) -> str:
        """`2026-11-29 15:41:00-15:42:00` (UTC), for run tags a person reads in a list."""
        start, end = self.utc_bounds
        end_text = (
            end.strftime("%H:%M:%S") if end.date() == start.date() else end.strftime("%Y-%m-%d %H:%M:%S")
        )
        return f"{start:%Y-%m-%d %H:%M:%S}-{end_text}"

    @property
    def utc_bounds(self) -> tuple[datetime, datetime]:
        """[start, end) as UTC instants, for SQL over arrival times."""
        return utc_from_ms(self.start_ms), utc_from_ms(self.end_ms)

    def until(self, end_ms: int) -> Window:
        """This window cut off at `end_ms` (never empty: at least 1 ms)."""
        return Window(self.start_ms, max(self.start_ms + 1, min(self.end_ms, end_ms)))

    @property
    def id_range(self) -> tuple[str, str]:
        """The stream entry IDs that bound the window, for XRANGE (both inclusive)."""
        return id_range(self.start_ms, self.end_ms)

    @property
    def run_key(self) -> str:
        return f"{self.start_ms}-{self.end_ms}"


@dataclass
class ClosingWindow:
    """A window read as it closes, in pieces of at least `step_ms` (the last may be shorter).

    A run is requested up to the sensor's lead before its window closes; it reads each piece once the
    clock (Redis's, as `clock` gives it in ms) is past the piece's end plus the grace, so that nothing can
    arrive in it any more, and waits for the rest meanwhile. At the close only the last piece is left to
    read, not the whole window. `waited_ms` adds up the pauses.
    """

    window: Window
    grace_ms: int
    step_ms: int
    clock: Callable[[], int]
    sleep: Callable[[float], None] = time.sleep
    waited_ms: int = 0

    def pieces(self) -> Iterator[Window]:
        at = self.window.start_ms
        while at < self.window.end_ms:
            closed_until = self.clock() - self.grace_ms
            if closed_until >= self.window.end_ms or closed_until - at >= self.step_ms:
                end = min(self.window.end_ms, closed_until)
                yield Window(at, end)
                at = end
                continue
            pause_ms = min(self.window.end_ms, at + self.step_ms) - closed_until
            self.sleep(pause_ms / 1000)
            self.waited_ms += pause_ms


def floor_to(ms: int, step_ms: int) -> int:
    return ms - ms % step_ms


def closed_windows(cursor_ms: int, now_ms: int, window_ms: int, grace_ms: int, limit: int) -> list[Window]:
    """The runs to request for everything closed since `cursor_ms` (a window boundary), at most `limit`."""
    if HOUR_MS % window_ms:
        raise ValueError(f"window of {window_ms} ms does not divide an hour")
    if cursor_ms % window_ms:
        raise ValueError(f"cursor {cursor_ms} is not on a window boundary")
    closed_until = floor_to(now_ms - grace_ms, window_ms)  # end of the last closed window
    windows: list[Window] = []
    start = cursor_ms
    while start < closed_until and len(windows) < limit:
        hour_end = floor_to(start, HOUR_MS) + HOUR_MS
        end = min(hour_end, closed_until)
        windows.append(Window(start, end))
        start = end
    return windows


def choose_windows(
    windows: list[Window],
    cursor_ms: int,
    now_ms: int,
    grace_ms: int,
    skip_empty: bool,
    has_entries: Callable[[Window], bool],
) -> tuple[list[Window], int]:
    """Which windows get a run, and the next cursor.

    `windows` may include some that close only within the sensor's lead: their runs land them as they close.
    With `skip_empty`, a window without entries gets no run once it has closed (the window that closes an
    hour always runs: it runs the hour's checks); one that is empty but still open is looked at again.
    """
    chosen: list[Window] = []
    next_ms = cursor_ms
    for window in windows:
        if window.closes_hour or not skip_empty or has_entries(window):
            chosen.append(window)
        elif window.end_ms + grace_ms > now_ms:
            break
        next_ms = window.end_ms
    return chosen, next_ms


def defer_while_busy(windows: list[Window], in_flight: int, max_in_flight: int) -> list[Window]:
    """`windows` less those of the open hour while `in_flight` unfinished runs reach `max_in_flight`.

    The windows that close an hour always go (their runs run the hour's checks, and nothing more can
    join them); the cursor stays before the first deferred window, so a later tick hands out everything
    closed by then as one run.
    """
    if in_flight < max_in_flight:
        return windows
    going: list[Window] = []
    for window in windows:
        if not window.closes_hour:
            break
        going.append(window)
    return going


def partition_window(partition_key: str) -> Window:
    start = datetime.strptime(partition_key, PARTITION_FORMAT).replace(tzinfo=UTC)
    start_ms = int(start.timestamp() * 1000)
    return Window(start_ms, start_ms + HOUR_MS)


def uncovered(ranges: list[tuple[int, int]], start_ms: int, end_ms: int) -> list[Window]:
    """The parts of [start_ms, end_ms) that no range in `ranges` ([a, b) pairs, any order) covers."""
    gaps: list[Window] = []
    at = start_ms
    for a, b in sorted(ranges):
        if b <= at:
            continue
        if a >= end_ms:
            break
        if a > at:
            gaps.append(Window(at, a))
        at = max(at, b)
    if at < end_ms:
        gaps.append(Window(at, end_ms))
    return gaps


def hours_window(start_key: str, end_key: str) -> Window:
    """From the start of partition `start_key` to the end of partition `end_key`."""
    return Window(partition_window(start_key).start_ms, partition_window(end_key).end_ms)


def split_at_hours(window: Window) -> list[Window]:
    """`window` cut at hour boundaries: each part lies in one hour partition."""
    parts: list[Window] = []
    start = window.start_ms
    while start < window.end_ms:
        end = min(floor_to(start, HOUR_MS) + HOUR_MS, window.end_ms)
        parts.append(Window(start, end))
        start = end
    return parts


def heal_until(cursor_ms: int, now_ms: int, heal_after_ms: int, grace_ms: int, window_ms: int) -> int:
    """Where heal ranges end: on a window boundary, no later than the cursor (the windows from the cursor on
    are the live runs') and no later than the last window closed at least `heal_after_ms` (and the grace)
    ago. A range ending at `now - heal_after_ms` itself would reach into a window still in flight."""
    return min(cursor_ms, floor_to(now_ms - max(heal_after_ms, grace_ms), window_ms))


def held_range(configured: tuple[int, int] | None, tags: Mapping[str, str]) -> tuple[int, int] | None:
    """The arrival range [start_ms, end_ms) an unfinished run processes: its `configured` range (micro,
    hour and heal runs), else its partitions' hours (a backfill or a UI materialization); None for a run of
    no hour partition (compaction, the freshness check)."""
    if configured is not None:
        return configured
    if PARTITION_TAG in tags:
        window = partition_window(tags[PARTITION_TAG])
    elif RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        window = hours_window(tags[RANGE_START_TAG], tags[RANGE_END_TAG])
    else:
        return None
    return window.start_ms, window.end_ms


def windows_to_heal(
    processed: list[tuple[int, int]],
    held: list[tuple[int, int]],
    lookback_start_ms: int,
    heal_until_ms: int,
    last_tried: dict[str, int],
    now_ms: int,
    retry_after_ms: int,
) -> list[Window]:
    """Closed ranges in [lookback_start_ms, heal_until_ms) that no processed batch covers and no unfinished
    run holds (`held`), cut at hours, leaving out those tried again less than `retry_after_ms` ago
    (`last_tried`: run key -> when)."""
    gaps = [
        part
        for gap in uncovered([*processed, *held], lookback_start_ms, heal_until_ms)
        for part in split_at_hours(gap)
    ]
    return [w for w in gaps if now_ms - last_tried.get(w.run_key, -retry_after_ms) >= retry_after_ms]


def settled_until(
    ranges_by_shard: Mapping[int, list[tuple[int, int]]],
    start_ms: int,
    end_ms: int,
    has_entries: Callable[[int, Window], bool],
) -> int:
    """How far from `start_ms` (up to `end_ms`) every shard is processed: the start of the first range
    that a shard's `ranges_by_shard` (its processed ranges) leave uncovered and that holds entries of that
    shard (`has_entries(shard, gap)`), the earliest over the shards; `end_ms` when there is none."""
    settled = end_ms
    for shard, ranges in sorted(ranges_by_shard.items()):
        for gap in uncovered(ranges, start_ms, settled):
            if has_entries(shard, gap):
                settled = gap.start_ms
                break
    return settled
