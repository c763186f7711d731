"""What the producer says about a failure, and the one failure of its own.

Which failures are worth a reconnect is common.errors' (one taxonomy for the
producer and the consumers): connection trouble of any kind (refused, dropped,
timed out, Materialize ending the subscription because it fell behind or sat idle
in its transaction, Redis loading its AOF or out of memory) is transient: back off,
reconnect, resume from the checkpoint. What retrying cannot fix — bad credentials,
a view or column that does not exist — is fatal, and so is anything the taxonomy
cannot place (a layout that is not what SUBSCRIBE should give, a bug): exit
non-zero so the supervisor and the operator see it. Pure, no I/O.
"""

from __future__ import annotations

import psycopg

from ..common.errors import TransientError
from ..common.materialize import describe_statement

__all__ = ["AsOfRefused", "describe"]


class AsOfRefused(TransientError):
    """Materialize no longer has the history the checkpoint needs: take a snapshot."""


def describe(error: BaseException) -> str:
    """One line: the message, without psycopg's multi-line context. A statement
    Materialize refused (it has a SQLSTATE) says Materialize and what to check
    (common.materialize.describe_statement); a failed connection already does
    (common.materialize.connect raises it with its address and settings)."""
    if isinstance(error, psycopg.Error) and error.sqlstate:
        return describe_statement(error)
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
