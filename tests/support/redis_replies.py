"""The exception redis-py raises for a Redis error reply, built by redis-py's own parser.

Tests of error handling must not build ``ResponseError("OOM …")`` by hand: redis-py
raises a class of its own for some codes and strips the code from the message
(OutOfMemoryError "command not allowed…"), so a hand-built error is one it never raises.
"""

from __future__ import annotations

from redis import exceptions as redis_errors
from redis._parsers.base import BaseParser

__all__ = ["reply"]


def reply(text: str) -> redis_errors.RedisError:
    """What a client raises when Redis answers ``-<text>``."""
    error: redis_errors.RedisError = BaseParser.parse_error(text)  # type: ignore[no-untyped-call]
    return error
