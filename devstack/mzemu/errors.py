"""Materialize's errors and notices, with its exact texts and SQLSTATEs.

Every text here is copied from Materialize's adapter (``src/adapter/src/error.rs``,
``notice.rs``, ``active_compute_sink.rs``), because clients match on them: the
producer tells "history lost" from "view dropped" by the SQLSTATE and the message.
Pure module: no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

__all__ = [
    "MzError",
    "Notice",
    "aborted_transaction",
    "absurd_subscribe_bounds",
    "canceled",
    "cluster_does_not_exist",
    "declare_outside_transaction",
    "dependency_dropped",
    "duplicate_cursor",
    "equal_subscribe_bounds",
    "idle_in_transaction_timeout",
    "impossible_timestamp",
    "invalid_set_cluster",
    "no_transaction_in_progress",
    "read_only_transaction",
    "subscribe_fell_behind",
    "subscribe_only_transaction",
    "syntax_error",
    "transaction_in_progress",
    "unknown_cluster",
    "unknown_cursor",
    "unknown_item",
]


@dataclass
class MzError(Exception):
    """An ErrorResponse: ``severity`` is ERROR (statement fails) or FATAL (session ends)."""

    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None
    severity: str = "ERROR"
    position: int | None = None

    def __str__(self) -> str:
        return f"{self.sqlstate}: {self.message}"


@dataclass(frozen=True)
class Notice:
    """A NoticeResponse (severity NOTICE or WARNING)."""

    sqlstate: str
    message: str
    severity: str = "NOTICE"
    detail: str | None = None
    hint: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def canceled() -> MzError:
    return MzError("57014", "canceling statement due to user request")


def idle_in_transaction_timeout() -> MzError:
    return MzError(
        "25P03", "terminating connection due to idle-in-transaction timeout", severity="FATAL"
    )


def declare_outside_transaction() -> MzError:
    # AdapterError::OperationRequiresTransaction("DECLARE CURSOR")
    return MzError("25P01", "DECLARE CURSOR can only be used in transaction blocks")


def invalid_set_cluster() -> MzError:
    return MzError("25001", "SET cluster cannot be called in an active transaction")


def subscribe_only_transaction() -> MzError:
    return MzError("25000", "SUBSCRIBE in transactions must be the only read statement")


def read_only_transaction() -> MzError:
    return MzError(
        "25006",
        "transaction in read-only mode",
        detail="SELECT queries cannot be combined with other query types, including SUBSCRIBE.",
    )


def aborted_transaction() -> MzError:
    return MzError(
        "25P02", "current transaction is aborted, commands ignored until end of transaction block"
    )


def unknown_cursor(name: str) -> MzError:
    return MzError("34000", f"cursor {quoted(name)} does not exist")


def duplicate_cursor(name: str) -> MzError:
    return MzError("42P03", f"cursor {quoted(name)} already exists")


def unknown_item(name: str) -> MzError:
    return MzError("42P01", f"unknown catalog item '{name}'")


def unknown_cluster(name: str) -> MzError:
    # A catalog error outside VarError: Materialize reports it as an internal error.
    return MzError("XX000", f"unknown cluster '{name}'")


def syntax_error(message: str, position: int | None = None) -> MzError:
    return MzError("42601", message, position=position)


def absurd_subscribe_bounds(as_of: int, up_to: int) -> MzError:
    return MzError(
        "22000",
        "subscription lower bound (`AS OF`) is greater than its upper bound (`UP TO`): "
        f"{as_of} > {up_to}",
    )


def _display_ts(ts: int) -> str:
    # DisplayableInTimeline for the EpochMilliseconds timeline: "{:13} (%Y-%m-%d %H:%M:%S%.3f)".
    moment = dt.datetime.fromtimestamp(ts / 1000, tz=dt.UTC)
    return f"{ts:13} ({moment.strftime('%Y-%m-%d %H:%M:%S')}.{ts % 1000:03d})"


def impossible_timestamp(as_of: int, since: int, collection_id: str) -> MzError:
    """``AS OF`` below the collection's since (ImpossibleTimestampConstraints).

    The detail mimics Materialize's constraint listing: the binding lower bound is the
    storage input's since, the upper bound is the query's own ``AS OF``.
    """
    detail = (
        "Constraints:\n"
        "lower:\n"
        f"  (StorageInput([{collection_id}])): [{_display_ts(since)}]\n"
        "upper:\n"
        f"  (QueryAsOf): [{_display_ts(as_of)}]\n"
    )
    return MzError("22000", "could not find a valid timestamp for the query", detail=detail)


def _bytesize(n: int) -> str:
    # bytesize's Display (IEC units with one decimal, as the adapter formats it).
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {units[unit]}"


def subscribe_fell_behind(buffered_bytes: int, max_buffered_bytes: int) -> MzError:
    return MzError(
        "53200",
        "SUBSCRIBE fell behind: the client did not read results fast enough, so its backlog "
        f"reached {_bytesize(buffered_bytes)}, exceeding the {_bytesize(max_buffered_bytes)} "
        "budget",
        hint="The client is not reading results fast enough. Use a client that reads output "
        "without buffering, or raise the subscribe_max_buffered_bytes system variable.",
    )


def dependency_dropped(full_name: str) -> MzError:
    # ActiveSubscribe::retire(DependencyDropped) -> PeekResponseUnary::Error, which pgwire
    # sends as an internal error.
    return MzError(
        "XX000",
        f"subscribe has been terminated because underlying relation {quoted(full_name)} "
        "was dropped",
    )


def equal_subscribe_bounds(bound: int) -> Notice:
    return Notice(
        "00000",
        f"subscribe as of {bound} (inclusive) up to the same bound {bound} (exclusive) "
        "is guaranteed to be empty",
    )


def cluster_does_not_exist(name: str) -> Notice:
    return Notice(
        "MZ007",
        f"cluster {quoted(name)} does not exist",
        hint="Create the cluster with CREATE CLUSTER or pick an extant cluster with "
        "SET CLUSTER = name. List available clusters with SHOW CLUSTERS.",
    )


def transaction_in_progress() -> Notice:
    return Notice("25001", "there is already a transaction in progress", severity="WARNING")


def no_transaction_in_progress() -> Notice:
    return Notice("25P01", "there is no transaction in progress", severity="WARNING")


def quoted(name: str) -> str:
    """mz_ore's ``StrExt::quoted``: double quotes, inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'
