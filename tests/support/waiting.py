"""Waiting for something to become true: the one polling loop the tests share.

A wait here bounds how long a test may hang, never what it asserts about speed (that is bench/'s job), so
timeouts are generous and no caller measures them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_SHOWN_CHARS = 500  # of the last value, in the message of a wait that timed out


def wait_until(
    predicate: Callable[[], T], timeout_s: float, *, interval_s: float = 0.05, what: str | None = None
) -> T:
    """Call `predicate` every `interval_s` until it returns something truthy, and return that value.

    The predicate runs at least once. When it returns nothing truthy within `timeout_s`: with `what`
    (what was awaited, e.g. "a row for device d1"), AssertionError naming it and the last value; without,
    the last (falsy) value, for the caller to assert on or to report in its own words.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        left_s = deadline - time.monotonic()
        if value or left_s <= 0:
            break
        time.sleep(min(interval_s, left_s))
    if value or what is None:
        return value
    shown = repr(value)
    if len(shown) > _SHOWN_CHARS:
        shown = shown[:_SHOWN_CHARS] + "..."
    raise AssertionError(f"timed out after {round(timeout_s, 1):g} s waiting for {what} (last: {shown})")
