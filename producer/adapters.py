"""The real services of producer.ports, built here and nowhere else.

* :func:`open_subscription`: the row source, a SUBSCRIBE cursor on Materialize;
* :func:`open_poll_source`: the poll source, read transactions on Materialize
  (:class:`MaterializePollSource`);
* :class:`RedisDigestStore`: the polling digests in the hash ``poll:digests``.

The entry sink is producer.writer.StreamWriter and the backpressure gate
producer.backpressure.BufferMonitor; producer.service builds those and these.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import psycopg
from psycopg import sql
from redis.asyncio import Redis

from ..common.config import Settings
from ..common.keys import Keys
from ..common.pipelines import raise_first_error
from .documents import kind_of_type
from .lease import ProducerFenced
from .polling import DIGEST_BYTES
from .ports import Columns
from .session import idle_timeout_seconds
from .subscribe import Subscription, connect
from .writer import send_commands

__all__ = [
    "MaterializePollSource",
    "RedisDigestStore",
    "open_poll_source",
    "open_subscription",
]

log = logging.getLogger("searchsync.producer.session")

T = TypeVar("T")
Command = tuple[bytes, ...]

# Keys per re-read query, fields per HSET/HDEL command and per HSCAN step: small
# enough that no single command holds Redis or Materialize for long.
_KEYS_PER_QUERY: Final = 5000
_HASH_FIELDS: Final = 5000
# digest scripts (each up to _HASH_FIELDS fields) per round trip: ~40 bytes a field,
# ~8 MB a round trip.
_HASH_COMMANDS: Final = 40
# Rows per chunk read from the server (psycopg chunked mode): rows are folded as
# they arrive, so a poll never holds the view, only digests and changed documents.
_STREAM_ROWS: Final = 2000
# A field being written: its entries may be in the streams, its digest is not
# known. Never equal to a digest (those are 8 bytes; in memory, non-negative).
_WRITING: Final = b""
_UNKNOWN: Final = -1


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


async def open_poll_source(settings: Settings) -> MaterializePollSource:
    """Connect to Materialize for polling. Raises psycopg errors (connecting is
    bounded by the connection's connect timeout)."""
    return MaterializePollSource(await connect(settings), settings)


class _MaterializeRead:
    """producer.ports.PollRead: one read transaction on Materialize (producer.polling's
    module docstring has the statements and why the view is read first)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], settings: Settings) -> None:
        self._conn = conn
        self._view = sql.Identifier(settings.view_name)
        self._key = sql.Identifier(settings.key_column)
        self._columns: Columns | None = None

    async def timestamp(self) -> int:
        # The view first: it fixes the time domain
        await self._conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(self._view))
        cursor = await self._conn.execute("SELECT mz_now()::text")
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def batches(self) -> AsyncIterator[Sequence[Sequence[Any]]]:
        cursor = self._conn.cursor()
        batch: list[Sequence[Any]] = []
        async for row in cursor.stream(
            sql.SQL("SELECT * FROM {}").format(self._view), size=_STREAM_ROWS
        ):
            if self._columns is None:
                self._columns = _columns(cursor.description)
            batch.append(row)
            if len(batch) >= _STREAM_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch

    def columns(self) -> Columns | None:
        return self._columns

    async def rows_of(self, keys: Sequence[str]) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = []
        for chunk in _chunks(keys, _KEYS_PER_QUERY):
            cursor = await self._conn.execute(
                sql.SQL("SELECT * FROM {} WHERE {} IN ({})").format(
                    self._view, self._key, sql.SQL(", ").join(sql.Literal(k) for k in chunk)
                )
            )
            self._columns = _columns(cursor.description)
            rows.extend(await cursor.fetchall())
        return rows


def _columns(description: Sequence[Any] | None) -> Columns:
    description = description or []
    return [c.name for c in description], [kind_of_type(c.type_code) for c in description]


class MaterializePollSource:
    """producer.ports.PollSource on one Materialize connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], settings: Settings) -> None:
        self._conn = conn
        self._settings = settings

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_MaterializeRead]:
        async with self._conn.transaction():
            yield _MaterializeRead(self._conn, self._settings)

    async def close(self) -> None:
        await self._conn.close()


# KEYS[1] the producer lease, KEYS[2] poll:digests; ARGV[1] the lease value the session
# started under, ARGV[2] n, then n field/value pairs to HSET, then the fields to HDEL.
# Sliced by 1000 arguments: Lua's unpack has a stack limit.
_DIGESTS: Final = b"""
local last = 2 + 2 * tonumber(ARGV[2])
local i = 3
while i <= last do
  local j = math.min(i + 999, last)
  redis.call('HSET', KEYS[2], unpack(ARGV, i, j))
  i = j + 1
end
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  redis.call('HDEL', KEYS[2], unpack(ARGV, i, j))
  i = j + 1
end
return 1
"""

# The same once the lease check passed; -1: fenced (nothing written).
_FENCED_DIGESTS: Final = (
    b"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
"""
    + _DIGESTS
)


class RedisDigestStore:
    """producer.ports.DigestStore on the hash ``poll:digests`` (field = key, value = the
    8 digest bytes, big-endian; empty while being written). Every call raises redis
    errors (a refused command as ResponseError), each round trip bounded by the
    client's socket timeout.

    With ``lease`` (the producer lease value the session started under) the digests are
    stored only while that value holds the lease (a script checks it,
    :data:`_FENCED_DIGESTS`); otherwise :class:`~producer.lease.ProducerFenced` is raised
    and nothing is stored. A producer paused past its lease would otherwise store the
    digests of its own poll over what its successors wrote meanwhile, and the next poll
    would miss a delete (``python -m tests.sim --seed 350 --polling``). Marking keys as
    being written is fenced too: on a hash a successor dropped it would make a digest
    set of them, and the next poll would delete nothing else. Dropping every digest is
    not: it only makes the next poll read everything.
    """

    def __init__(self, redis: Redis, keys: Keys, lease: str | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._name = keys.poll_digests.encode()
        self._lease = lease

    async def load(self) -> dict[str, int] | None:
        # The key set of the previous polling design: nothing keeps it any more.
        await self._redis.delete(self._keys.poll_keys)
        if not await self._redis.exists(self._keys.poll_digests):
            return None
        digests: dict[str, int] = {}
        cursor = b"0"
        while True:
            [reply] = await send_commands(
                self._redis, [(b"HSCAN", self._name, cursor, b"COUNT", b"%d" % _HASH_FIELDS)]
            )
            raise_first_error([reply])
            cursor, flat = reply
            for at in range(0, len(flat), 2):
                value = flat[at + 1]
                digests[flat[at].decode()] = (
                    int.from_bytes(value, "big") if len(value) == DIGEST_BYTES else _UNKNOWN
                )
            if cursor == b"0":
                return digests

    async def invalidate(self, keys: Sequence[str]) -> None:
        await self._write(self._scripts(dict.fromkeys(keys, _WRITING), (), _HASH_FIELDS))

    async def remember(self, digests: Mapping[str, int], forget: Sequence[str]) -> None:
        await self._write(self._scripts(digests, forget, _HASH_FIELDS))

    async def remember_at_once(self, digests: Mapping[str, int], forget: Sequence[str]) -> None:
        await self._write(self._scripts(digests, forget, None))

    async def forget_all(self) -> None:
        raise_first_error(await send_commands(self._redis, [(b"UNLINK", self._name)]))

    def _scripts(
        self, digests: Mapping[str, int | bytes], forget: Sequence[str], size: int | None
    ) -> list[Command]:
        """One script per ``size`` fields (None: one script for all, applied at once: a
        script runs whole or not at all); a digest given as bytes is stored as is
        (:data:`_WRITING`). Fenced by the lease when there is one."""
        script = _DIGESTS if self._lease is None else _FENCED_DIGESTS
        head = (self._keys.producer_lease.encode(), self._name, (self._lease or "").encode())
        items = [*digests.items(), *((k, None) for k in forget)]
        scripts: list[Command] = []
        for chunk in _chunks(items, size or max(len(items), 1)):
            pairs = [
                part
                for key, d in chunk
                if d is not None
                for part in (_field(key, d) if isinstance(d, int) else (key.encode(), d))
            ]
            dropped = [key.encode() for key, d in chunk if d is None]
            scripts.append(
                (b"EVAL", script, b"2", *head, b"%d" % (len(pairs) // 2), *pairs, *dropped)
            )
        return scripts

    async def _write(self, scripts: list[Command]) -> None:
        """``scripts`` in round trips of :data:`_HASH_COMMANDS`; raises the first refused
        one, or :class:`~producer.lease.ProducerFenced` (nothing of that round trip
        written)."""
        for batch in _chunks(scripts, _HASH_COMMANDS):
            replies = await send_commands(self._redis, batch)
            raise_first_error(replies)
            if -1 in replies:
                raise ProducerFenced(
                    f"the producer lease of {self._keys.prefix} is no longer {self._lease}: "
                    "poll digests not stored"
                )


def _field(key: str, digest: int) -> tuple[bytes, bytes]:
    return key.encode(), digest.to_bytes(DIGEST_BYTES, "big")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
