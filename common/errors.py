"""One error taxonomy for the whole service: producer, consumers and CLI.

The split that matters to a running process: a *transient* failure (a connection
dropped, a server is restarting or overloaded, a password being rotated) means
"back off, reconnect, resume from durable state"; a *fatal* one means "this will
not get better by retrying: exit non-zero so the supervisor and the operator see
it". :func:`classify` says which for any exception, from searchsync's own
classes (:class:`TransientError`, :class:`FatalError`) and from what the
drivers raise; what it cannot place is :attr:`Failure.UNKNOWN` (a bug, or an
input the code did not expect), and each process says what it does with that:
the producer exits (producer.service), a consumer's partition runner retries and
counts the entries in hand as attempted, so a poison entry ends in the dead-letter
stream (consumer.runner). Configuration errors are handled before any of this,
with exit 2 (common.config).

=====================================  =========  ==================================
error                                  failure    why
=====================================  =========  ==================================
redis ConnectionError, TimeoutError    transient  Redis restarting, loading, away
redis error reply LOADING, OOM, BUSY,  transient  the server recovers by itself (memory
READONLY, MASTERDOWN, TRYAGAIN,                   freed by retention, a failover
CLUSTERDOWN, MISCONF, NOREPLICAS,                 finished); a flushed script cache
NOSCRIPT                                          is reloaded
redis error reply NOGROUP, UNBLOCKED   transient  a group or stream lost with Redis
                                                  data: the producer re-creates the
                                                  groups on its next buffer reading
redis error reply MOVED, ASK; the      transient  a slot moved or is moving (a
cluster client's ClusterError,                    resharding, a failover): the retry
SlotNotCoveredError                               goes where the refreshed slot map
                                                  says, from durable state
any other redis error reply            fatal      WRONGTYPE, NOPERM: the data or the
                                                  ACL is wrong; CROSSSLOT: a command
                                                  spans two slots (a bug, common.keys)
OpenSearch ConnectionError (TLS,       transient  the node is away or overloaded;
timeouts), 401/403/404/429/5xx                    credentials, roles and proxies are
                                                  fixed while searchsync retries
OpenSearch 400 (RequestError)          fatal      the request itself is refused
psycopg without SQLSTATE               transient  connection refused, reset, timed
(OperationalError)                                out
psycopg SQLSTATE 28, 42, 3D, 0A        fatal      authentication, privileges,
                                                  missing objects, bad SQL
other psycopg errors                   transient  Materialize ended the session
OSError, TimeoutError                  transient  the network
=====================================  =========  ==================================
"""

from __future__ import annotations

import enum
import sys
from typing import Final

from redis import exceptions as redis_errors

__all__ = ["Failure", "FatalError", "SearchsyncError", "TransientError", "classify", "is_transient"]


class SearchsyncError(Exception):
    """Base of every error searchsync raises on purpose."""


class TransientError(SearchsyncError):
    """Retry after a backoff, from the last durable state (checkpoint, pending entries)."""


class FatalError(SearchsyncError):
    """Stop the process: retrying cannot help (e.g. the view does not exist)."""


class Failure(enum.Enum):
    TRANSIENT = "transient"  # back off, reconnect, resume from durable state
    FATAL = "fatal"  # exit non-zero
    UNKNOWN = "unknown"  # neither: each process's policy (module docstring)


# redis-py raises a class of its own for some replies and strips their code from the
# message (redis._parsers.base.BaseParser.EXCEPTION_CLASSES: OOM → OutOfMemoryError
# "command not allowed…"); the others keep the code as the message's first word.
_TRANSIENT_REDIS_CLASSES: Final = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.NoScriptError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,  # MasterDownError too
    redis_errors.AskError,  # MovedError too: "MOVED/ASK <slot> <host:port>", code stripped
)
_TRANSIENT_REDIS_CODES: Final = frozenset(
    {
        "LOADING", "OOM", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN",
        "MISCONF", "NOREPLICAS", "NOSCRIPT", "NOGROUP", "UNBLOCKED",
    }
)  # fmt: skip
# SQLSTATE classes that retrying cannot fix: authentication, privileges and missing
# objects, bad SQL, a database that does not exist, features not supported.
_FATAL_SQLSTATE_CLASSES: Final = ("28", "42", "3D", "0A")


def classify(error: BaseException) -> Failure:
    """Whether ``error`` is transient, fatal or neither (the table above)."""
    if isinstance(error, TransientError):
        return Failure.TRANSIENT
    if isinstance(error, FatalError):
        return Failure.FATAL
    if isinstance(error, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return Failure.TRANSIENT  # BusyLoadingError is a ConnectionError too
    if isinstance(error, redis_errors.ClusterError | redis_errors.SlotNotCoveredError):
        # the cluster client gave up following redirections ("TTL exhausted"), or its
        # slot map has a hole while a failover is under way: a new map comes with a retry
        return Failure.TRANSIENT
    if isinstance(error, redis_errors.ResponseError):
        if isinstance(error, _TRANSIENT_REDIS_CLASSES):
            return Failure.TRANSIENT
        code = str(error).split(" ", 1)[0]
        return Failure.TRANSIENT if code in _TRANSIENT_REDIS_CODES else Failure.FATAL
    if isinstance(error, redis_errors.InvalidResponse):
        return Failure.TRANSIENT  # a garbled reply: the connection is dropped and remade
    opensearch = _opensearch(error)
    if opensearch is not None:
        return opensearch
    postgres = _postgres(error)
    if postgres is not None:
        return postgres
    if isinstance(error, OSError | TimeoutError):
        return Failure.TRANSIENT
    return Failure.UNKNOWN


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` should lead to a backoff and a retry."""
    return classify(error) is Failure.TRANSIENT


def _opensearch(error: BaseException) -> Failure | None:
    # opensearch-py (with aiohttp and requests: ~20 MB of the producer's RSS, 0.3 s)
    # is imported only by the processes that talk to OpenSearch; the producer never
    # has its errors
    errors = sys.modules.get("opensearchpy.exceptions")
    if errors is None or not isinstance(error, errors.TransportError):
        return None
    return Failure.FATAL if isinstance(error, errors.RequestError) else Failure.TRANSIENT


def _postgres(error: BaseException) -> Failure | None:
    # psycopg is imported only by the processes that talk to Materialize (producer,
    # CLI); a consumer never has its errors and need not load it (~0.2 s) to say so.
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(error, psycopg.Error):
        return None
    state: str = getattr(error, "sqlstate", None) or ""
    if isinstance(error, psycopg.OperationalError) and not state:
        return Failure.TRANSIENT  # connection refused, reset, timed out: no SQLSTATE
    return Failure.FATAL if state.startswith(_FATAL_SQLSTATE_CLASSES) else Failure.TRANSIENT
