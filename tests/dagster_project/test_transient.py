"""A step's retry policy is for passing faults only: anything else fails the step at once, with the
original exception as the failure's cause."""

from __future__ import annotations

import psycopg
import pytest
import redis
from dagster import Failure

from dagster_project.defs.transient import only_transient_faults_retried


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("connection refused"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.SerializationFailure("could not serialize access"),
        psycopg.errors.DeadlockDetected("deadlock detected"),
        psycopg.InterfaceError("the connection is closed"),
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        redis.TimeoutError("Timeout reading from socket"),
        ConnectionResetError("reset by peer"),
    ],
)
def test_a_passing_fault_is_left_to_the_retry_policy(exc: Exception) -> None:
    with pytest.raises(type(exc)) as raised, only_transient_faults_retried():
        raise exc
    assert raised.value is exc


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.errors.UndefinedTable('relation "measurements" does not exist'),
        psycopg.errors.NotNullViolation("null value in column"),
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        KeyError("value"),
        ValueError("bad"),
    ],
)
def test_any_other_error_bypasses_the_retry_policy_and_names_its_cause(exc: Exception) -> None:
    with pytest.raises(Failure) as raised, only_transient_faults_retried():
        raise exc
    assert raised.value.allow_retries is False
    assert raised.value.__cause__ is exc
    assert f"{type(exc).__qualname__}: {exc}" in raised.value.description


def test_a_failure_the_step_raised_itself_is_left_alone() -> None:
    own = Failure("configured range is not inside the partition", allow_retries=False)
    with pytest.raises(Failure) as raised, only_transient_faults_retried():
        raise own
    assert raised.value is own
