"""producer/failures.py: which failures reconnect and which stop the process."""

from __future__ import annotations

import psycopg
from psycopg import errors
from redis import exceptions as redis_errors

from searchsync.common.errors import FatalError, TransientError, is_transient
from searchsync.producer.failures import AsOfRefused, describe
from searchsync.producer.rows import LayoutError
from tests.support.redis_replies import reply


def test_connection_failures_are_transient() -> None:
    assert is_transient(psycopg.OperationalError("connection refused"))
    assert is_transient(redis_errors.ConnectionError("Error 111"))
    assert is_transient(redis_errors.BusyLoadingError("LOADING"))
    assert is_transient(redis_errors.TimeoutError())
    assert is_transient(reply("OOM command not allowed when used memory"))
    assert is_transient(AsOfRefused("history gone"))
    assert is_transient(TransientError("x"))


def test_materialize_ending_a_subscription_is_transient() -> None:
    assert is_transient(errors.lookup("53200")("SUBSCRIBE fell behind"))
    assert is_transient(errors.lookup("25P03")("idle-in-transaction timeout"))
    assert is_transient(errors.lookup("XX000")("dependency dropped"))
    assert is_transient(errors.lookup("57014")("canceling statement"))


def test_what_retrying_cannot_fix_is_fatal() -> None:
    assert not is_transient(errors.lookup("42P01")("unknown catalog item"))
    assert not is_transient(errors.lookup("28P01")("password authentication failed"))
    assert not is_transient(redis_errors.ResponseError("WRONGTYPE Operation against a key"))
    assert not is_transient(LayoutError("no key column"))
    assert not is_transient(FatalError("x"))
    assert not is_transient(ValueError("a bug"))


def test_describe_is_one_line() -> None:
    assert describe(ValueError("first\nsecond")) == "first"
    assert (
        describe(errors.lookup("53200")("fell behind"))
        == "Materialize: fell behind (SQLSTATE 53200)"
    )
