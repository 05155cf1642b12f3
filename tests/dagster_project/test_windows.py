"""Micro-window arithmetic of the sensor."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagster_project.lib.windows import (
    HOUR_MS,
    ClosingWindow,
    Window,
    choose_windows,
    closed_windows,
    defer_while_busy,
    partition_window,
)

H = 1_795_392_000_000  # 2026-11-23 00:00 UTC, an hour boundary
MIN = 60_000


def test_nothing_closed_before_end_plus_grace() -> None:
    assert closed_windows(H, H + MIN + 1999, MIN, 2000, 100) == []
    assert closed_windows(H, H + MIN + 2000, MIN, 2000, 100) == [Window(H, H + MIN)]


def test_closed_windows_of_the_open_hour_merge_into_one_run() -> None:
    [window] = closed_windows(H, H + 5 * MIN + 2500, MIN, 2000, 100)
    assert window == Window(H, H + 5 * MIN)
    assert window.partition_key == "2026-11-23-00:00"
    assert not window.closes_hour


def test_catch_up_asks_one_run_per_whole_closed_hour() -> None:
    windows = closed_windows(H + 30 * MIN, H + 3 * HOUR_MS + 10 * MIN + 2000, MIN, 2000, 100)
    assert windows == [
        Window(H + 30 * MIN, H + HOUR_MS),  # the rest of the first hour
        Window(H + HOUR_MS, H + 2 * HOUR_MS),
        Window(H + 2 * HOUR_MS, H + 3 * HOUR_MS),
        Window(H + 3 * HOUR_MS, H + 3 * HOUR_MS + 10 * MIN),  # the open hour so far
    ]
    assert [w.whole_hour for w in windows] == [False, True, True, False]
    assert [w.closes_hour for w in windows] == [True, True, True, False]


def test_while_runs_are_in_flight_open_hour_windows_wait_and_then_go_as_one_run() -> None:
    window_ms, grace = 10_000, 500
    cursor, in_flight, runs = H, 0, []
    # ticks every 5 s for 3 minutes; each run takes 45 s, so the pipeline is behind
    for now in range(H, H + 3 * MIN, 5000):
        in_flight = sum(1 for _w, done in runs if done > now)
        windows = defer_while_busy(closed_windows(cursor, now, window_ms, grace, 100), in_flight, 1)
        for window in windows:
            runs.append((window, now + 45_000))
            cursor = window.end_ms
    requested = [w for w, _ in runs]
    assert len(requested) <= 4, "a backlog of 17 windows drains in a few runs"
    assert [w.start_ms for w in requested[1:]] == [w.end_ms for w in requested[:-1]], "no gap, no overlap"
    assert requested[0].start_ms == H and requested[-1].end_ms > H + 2 * MIN


def test_not_busy_hands_out_everything_and_hour_closing_windows_never_wait() -> None:
    windows = closed_windows(H + 30 * MIN, H + 2 * HOUR_MS + 10 * MIN + 2000, MIN, 2000, 100)
    assert defer_while_busy(windows, 0, 1) == windows
    assert defer_while_busy(windows, 3, 2) == windows[:2], "closed hours go, the open hour waits"
    assert defer_while_busy(windows[2:], 1, 1) == []


def test_limit_bounds_requests_per_tick() -> None:
    assert len(closed_windows(H, H + 10 * HOUR_MS, MIN, 0, 3)) == 3


def test_misaligned_cursor_or_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window boundary"):
        closed_windows(H + 1, H + HOUR_MS, MIN, 0, 10)
    with pytest.raises(ValueError, match="divide an hour"):
        closed_windows(H, H + HOUR_MS, 7 * MIN, 0, 10)


def test_partition_window() -> None:
    assert partition_window("2026-11-23-00:00") == Window(H, H + HOUR_MS)


@given(
    start_windows=st.integers(min_value=0, max_value=200),
    elapsed=st.integers(min_value=0, max_value=5 * HOUR_MS),
    window_s=st.sampled_from([10, 15, 30, 60, 300]),
)
def test_windows_tile_time_without_gaps_or_overlaps(start_windows: int, elapsed: int, window_s: int) -> None:
    window_ms = window_s * 1000
    cursor = H + start_windows * window_ms
    now = cursor + elapsed
    windows = closed_windows(cursor, now, window_ms, 500, 10_000)
    position = cursor
    for w in windows:
        assert w.start_ms == position and w.end_ms > w.start_ms
        assert w.end_ms <= now - 500
        assert w.end_ms - w.hour_start_ms <= HOUR_MS, "a run never spans two hour partitions"
        position = w.end_ms
    assert now - 500 - position < window_ms, "every closed window was handed out"


def test_windows_closing_within_the_lead_are_requested_early() -> None:
    now = H + MIN + 1000  # the first window closes (grace 2 s) 1 s from now; lead 2 s
    assert closed_windows(H, now + 2000, MIN, 2000, 10) == [Window(H, H + MIN)]
    assert closed_windows(H, now, MIN, 2000, 10) == []


class FakeClock:
    """A clock in ms that only moves when the code under test sleeps."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now_ms

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_ms += round(seconds * 1000)


def test_a_window_read_early_comes_in_closed_pieces_that_tile_it() -> None:
    window = Window(H, H + MIN)
    clock = FakeClock(H + MIN - 20_000 + 2000)  # requested 20 s early, grace 2 s: 40 s have closed
    closing = ClosingWindow(window, 2000, 1000, clock, clock.sleep)
    pieces = []
    for piece in closing.pieces():
        assert piece.end_ms <= clock() - 2000, "a piece is read only once it has closed"
        pieces.append(piece)
    assert pieces[0] == Window(H, H + 40_000), "what has closed already is one piece"
    assert [p.end_ms - p.start_ms for p in pieces[1:]] == [1000] * 20, "then one step at a time"
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(pieces))
    assert pieces[-1].end_ms == window.end_ms
    assert closing.waited_ms == 20_000 == round(sum(clock.sleeps) * 1000)


def test_a_closed_window_is_one_piece_without_waiting() -> None:
    window = Window(H, H + MIN)
    clock = FakeClock(H + 5 * MIN)
    closing = ClosingWindow(window, 2000, 1000, clock, clock.sleep)
    assert list(closing.pieces()) == [window]
    assert closing.waited_ms == 0 and clock.sleeps == []


@given(
    early_ms=st.integers(0, 40_000),
    step_ms=st.integers(1, 7000),
    grace_ms=st.integers(0, 3000),
    window_s=st.sampled_from([10, 60]),
)
def test_pieces_tile_the_window_whatever_the_lead_step_and_grace(
    early_ms: int, step_ms: int, grace_ms: int, window_s: int
) -> None:
    window = Window(H, H + window_s * 1000)
    clock = FakeClock(window.end_ms + grace_ms - early_ms)
    pieces = list(ClosingWindow(window, grace_ms, step_ms, clock, clock.sleep).pieces())
    assert pieces[0].start_ms == window.start_ms and pieces[-1].end_ms == window.end_ms
    assert all(a.end_ms == b.start_ms and b.end_ms > b.start_ms for a, b in itertools.pairwise(pieces))
    assert clock() >= window.end_ms + grace_ms, "the last piece is read after the close"


def test_empty_windows_are_skipped_once_closed_but_open_ones_are_looked_at_again() -> None:
    w1, w2, w3 = Window(H, H + MIN), Window(H + MIN, H + 2 * MIN), Window(H + 2 * MIN, H + 3 * MIN)
    busy = {w2}
    now = H + 3 * MIN + 500  # w3 closes (grace 2 s) within the lead, the others have closed
    chosen, cursor = choose_windows([w1, w2, w3], H, now, 2000, True, lambda w: w in busy)
    assert chosen == [w2] and cursor == w2.end_ms, "w3 is empty but may still fill: not passed over"
    busy.add(w3)
    chosen, cursor = choose_windows([w3], cursor, now, 2000, True, lambda w: w in busy)
    assert chosen == [w3] and cursor == w3.end_ms, "a window with entries runs early, before it closes"


def test_the_hour_closing_window_always_runs_and_skipping_can_be_turned_off() -> None:
    last = Window(H + HOUR_MS - MIN, H + HOUR_MS)
    assert choose_windows([last], last.start_ms, H + HOUR_MS + 5000, 2000, True, lambda w: False) == (
        [last],
        last.end_ms,
    )
    empty = Window(H, H + MIN)
    assert choose_windows([empty], H, H + 2 * MIN, 2000, False, lambda w: False) == ([empty], empty.end_ms)


def test_windows_to_heal_are_the_uncovered_parts_cut_at_hours_and_not_retried_too_soon() -> None:
    from dagster_project.lib.windows import windows_to_heal

    h = HOUR_MS
    processed = [(10_000, h - 20_000), (h + 5_000, 2 * h)]
    gaps = windows_to_heal(processed, [], 0, 2 * h, {}, now_ms=3 * h, retry_after_ms=60_000)
    assert gaps == [Window(0, 10_000), Window(h - 20_000, h), Window(h, h + 5_000)]
    tried = {Window(0, 10_000).run_key: 3 * h - 1_000}
    assert windows_to_heal(processed, [], 0, 2 * h, tried, now_ms=3 * h, retry_after_ms=60_000) == gaps[1:]


def test_no_heal_covers_a_range_an_unfinished_run_holds() -> None:
    from dagster_project.lib.windows import windows_to_heal

    held = [(MIN, 3 * MIN)]  # a live run of two windows, still going
    gaps = windows_to_heal([(0, MIN)], held, 0, 5 * MIN, {}, now_ms=HOUR_MS, retry_after_ms=60_000)
    assert gaps == [Window(3 * MIN, 5 * MIN)]
    assert windows_to_heal([], [(0, HOUR_MS)], 0, 5 * MIN, {}, now_ms=HOUR_MS, retry_after_ms=1) == []


def test_heal_ranges_end_on_a_window_boundary_behind_the_cursor_and_the_heal_delay() -> None:
    from dagster_project.lib.windows import heal_until

    # 120 s heal delay at 10:05:30 with 60 s windows: up to 10:03:00, not 10:03:30 (in the window in flight)
    now = H + 5 * MIN + 30_000
    assert heal_until(H + 5 * MIN, now, 120_000, 2_000, MIN) == H + 3 * MIN
    assert heal_until(H + 2 * MIN, now, 120_000, 2_000, MIN) == H + 2 * MIN  # never past the cursor
    assert heal_until(H + 5 * MIN, now, 0, 2_000, MIN) == H + 5 * MIN  # still a closed window: grace
    assert heal_until(H + 6 * MIN, H + 6 * MIN + 1_000, 0, 2_000, MIN) == H + 5 * MIN


def test_the_range_a_run_holds_is_its_configured_range_else_its_partitions_hours() -> None:
    from dagster_project.lib.windows import held_range, partition_window

    window = Window(H + MIN, H + 2 * MIN)
    configured = (window.start_ms, window.end_ms)
    assert held_range(configured, {"dagster/partition": window.partition_key}) == configured
    hour = partition_window(window.partition_key)
    assert held_range(None, {"dagster/partition": window.partition_key}) == (hour.start_ms, hour.end_ms)
    next_key = Window(hour.end_ms, hour.end_ms + 1).partition_key
    backfill = {
        "dagster/asset_partition_range_start": window.partition_key,
        "dagster/asset_partition_range_end": next_key,
    }
    assert held_range(None, backfill) == (hour.start_ms, hour.end_ms + HOUR_MS)
    assert held_range(None, {}) is None
