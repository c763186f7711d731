"""The real row source of producer.ports: a SUBSCRIBE cursor on Materialize."""

from __future__ import annotations

import logging

from ..common.config import Settings
from .session import idle_timeout_seconds
from .subscribe import Subscription, connect

__all__ = ["open_subscription"]

log = logging.getLogger("searchsync.producer.session")


async def open_subscription(settings: Settings) -> tuple[Subscription, float | None]:
    """Connect to Materialize and read its idle_in_transaction_session_timeout; the
    subscription is declared by the session. Raises psycopg errors (connecting is
    bounded by the connection's connect timeout)."""
    conn = await connect(settings)
    log.info("Connected to Materialize for SUBSCRIBE")
    try:
        idle = await idle_timeout_seconds(conn)
    except BaseException:
        await conn.close()
        raise
    subscription = Subscription(
        conn,
        view=settings.view_name,
        envelope=settings.subscribe_envelope,
        key_column=settings.key_column,
    )
    return subscription, idle
