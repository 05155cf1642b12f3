"""Which faults a step's retry policy retries: passing ones only (a connection refused or lost, a server
restarting, a lock or serialization conflict, Redis away). Any other error (a missing table, a bug, bad
configuration) fails the step at once: the same mistake tried again for minutes only hides it, and the
run's failure, its run retries and the sensor's heal follow as for any failed window."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from dagster import Failure

from iot_core.redis_client import REDIS_UNAVAILABLE

#: psycopg's OperationalError covers connection loss, admin shutdown, deadlocks, serialization failures,
#: lock and statement timeouts and a full disk; InterfaceError a connection closed under the client.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    *REDIS_UNAVAILABLE,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


@contextmanager
def only_transient_faults_retried() -> Iterator[None]:
    """Inside a step with a retry policy: a fault that is not transient becomes a `Failure` that bypasses
    the policy, with the original exception as its cause (shown in the run's log and by `up`)."""
    try:
        yield
    except Failure:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        raise Failure(
            description=f"{kind}: {exc} (not a passing fault: not retried within the run)",
            allow_retries=False,
        ) from exc
