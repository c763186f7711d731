"""Writing rejected changes to the dead-letter stream ``searchsync:{<view>}:dlq``.

Each letter is one change with the reason it was given up (see
common.entries.DeadLetter); ``searchsync dlq list|show|retry|purge`` (cli.dlq)
reads, retries and deletes them. Letters are queued into the same pipeline as the
XACK of their entry (consumer.acks), and before it, so a crash in between
re-delivers the entry rather than losing it: a letter may then be written twice,
never zero times.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio.client import Pipeline

from ..common.entries import OP_NAMES, DeadLetter, encode_dead_letter
from ..common.keys import Keys

__all__ = ["log_letters", "queue_letters"]

log = logging.getLogger(__name__)

# One ERROR line per letter, up to this many per batch; then a summary.
_LOGGED_PER_BATCH = 20


def queue_letters(pipe: Pipeline, keys: Keys, letters: Sequence[DeadLetter]) -> None:
    """Add one XADD per letter to ``pipe`` (nothing is sent until it executes)."""
    for letter in letters:
        pipe.xadd(keys.dlq, encode_dead_letter(letter))  # type: ignore[arg-type]


def log_letters(letters: Sequence[DeadLetter]) -> None:
    for letter in letters[:_LOGGED_PER_BATCH]:
        log.error(
            "Dead-lettered %s of key %s at ts=%d from %s: %s",
            OP_NAMES.get(letter.op, "entry"),
            letter.key.decode(errors="replace"),
            letter.ts,
            letter.source,
            letter.reason,
        )
    if len(letters) > _LOGGED_PER_BATCH:
        log.error("... and %d more dead letters in this batch", len(letters) - _LOGGED_PER_BATCH)
