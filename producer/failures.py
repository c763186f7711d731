"""Which failures are worth a reconnect, and how to say what happened in one line.

Pure, no I/O. Connection trouble of any kind (refused, dropped, timed out,
Materialize ending the subscription because it fell behind or sat idle in its
transaction, Redis loading its AOF or out of memory) is transient: back off,
reconnect, resume from the checkpoint. What retrying cannot fix — bad credentials,
a view or column that does not exist, a layout that is not what SUBSCRIBE should
give — is fatal: exit non-zero so the supervisor and the operator see it.
"""

from __future__ import annotations

from typing import Final

import psycopg
from redis import exceptions as redis_errors

from ..common.errors import FatalError, TransientError
from ..common.materialize import describe_statement
from .rows import LayoutError

__all__ = ["AsOfRefused", "describe", "is_transient"]

# SQLSTATE classes/codes that retrying cannot fix: authentication, privileges and
# missing objects, bad SQL, a database that does not exist.
_FATAL_CLASSES: Final = ("28", "42", "3D", "0A")
_TRANSIENT_REDIS_REPLIES: Final = ("LOADING", "OOM", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN")


class AsOfRefused(TransientError):
    """Materialize no longer has the history the checkpoint needs: take a snapshot."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` should lead to a backoff and a reconnect (else: exit)."""
    if isinstance(error, TransientError):
        return True
    if isinstance(error, FatalError | LayoutError):
        return False
    if isinstance(error, psycopg.Error):
        state = error.sqlstate or ""
        if isinstance(error, psycopg.OperationalError) and not state:
            return True  # connection refused, reset, timed out: no SQLSTATE
        return not state.startswith(_FATAL_CLASSES)
    if isinstance(error, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return True  # BusyLoadingError is a ConnectionError too
    if isinstance(error, redis_errors.ResponseError):
        return str(error).startswith(_TRANSIENT_REDIS_REPLIES)
    return isinstance(error, OSError | TimeoutError)


def describe(error: BaseException) -> str:
    """One line: the message, without psycopg's multi-line context. A statement
    Materialize refused (it has a SQLSTATE) says Materialize and what to check
    (common.materialize.describe_statement); a failed connection already does
    (common.materialize.connect raises it with its address and settings)."""
    if isinstance(error, psycopg.Error) and error.sqlstate:
        return describe_statement(error)
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
