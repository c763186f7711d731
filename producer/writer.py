"""Writes entries to the partition streams, then moves the checkpoint.

Order is the delivery guarantee: a batch's data entries, their ``written:p<N>``
counts and any dead letters go in one round trip; only when every reply of it is
a success does a second round trip move the checkpoint, and a third write the
progress entries (when due). So the checkpoint never passes a change that is not in a
stream, and a crash between them only replays (or delays the applied frontier).

Each round trip that adds entries first raises the high-water mark
(``ZADD … GT``, consumer.highwater) to the highest ts among them, so a consumer
never meets an entry of ours above it. The checkpoint moves through
producer.lease.FENCED_CHECKPOINT: only while this producer holds the view's
producer lease, and only up; the same script raises the mark for the progress
entries that follow it, so those of a producer that lost its lease are never above
the mark its successor read (:meth:`StreamWriter.commit`).

The round trip is a pipeline sent on one of redis-py's pooled connections: the
entries come packed in RESP already (:mod:`producer.batches`), the few other
commands are packed by ``hiredis.pack_command``. redis-py's asyncio pipeline packs
arguments in Python, about ten times the CPU per change of the packed form (the
README's "Measured" table has what the producer reaches).

On Redis Cluster (a ``RedisCluster`` client, common.redis_client) the commands are
grouped by the node that serves each one's key slot, and the groups are sent one
after the other in the order of their first command, each one round trip on that
node's connection. So the order the guarantees above need still holds across
nodes: the high-water mark's ZADD (the view's slot) goes in a round trip of its own and
must succeed before any entry is sent (a refused ZADD, e.g. MOVED while its slot is
resharded, would otherwise leave the other nodes' entries above the mark, which
consumers dead-letter), and the progress entries go only once the checkpoint's
script (the view's slot) has answered. A MOVED or ASK reply (a
slot moved) comes back as an error like any other: nothing may be assumed written,
the caller resumes from the checkpoint, and the client's slot map is reloaded first.

With REDIS_WAIT_REPLICAS > 0 every round trip that adds entries (:meth:`StreamWriter.
write`, :meth:`StreamWriter.mark_reconcile`) ends with ``WAIT <replicas> <timeout>`` on
each connection it wrote on, so the checkpoint never passes an entry a failover could
lose: fewer replicas than asked within REDIS_WAIT_TIMEOUT_MS raise
:class:`ReplicaWaitTimeout` (transient, counted in
``searchsync_producer_replica_wait_timeouts``), and the producer writes the changes
again from the checkpoint. The checkpoint and progress entries are not waited for: a
checkpoint lost in a failover is an older one, which only replays; the checkpoint's
round trip is when it raises the mark for progress entries. On a cluster the
high-water mark's own round trip is waited for too, progress or not: a failover of its
node must not lose a mark that entries on other nodes already rely on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, NamedTuple

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import AskError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..common.entries import (
    DELETE,
    PROGRESS,
    RECONCILE,
    UPSERT,
    DeadLetter,
    encode_dead_letter,
    encode_progress,
    encode_reconcile,
)
from ..common.errors import TransientError
from ..common.keys import HIGH_WATER_MEMBER, RECONCILE_PENDING, Keys
from ..common.pipelines import raise_first_error
from .batches import Entry
from .lease import FENCED_CHECKPOINT, FENCED_RECONCILE, MONOTONIC_CHECKPOINT, ProducerFenced
from .metrics import ProducerMetrics
from .progress import ProgressPacer

__all__ = [
    "Packed",
    "ReplicaWaitTimeout",
    "StreamWriter",
    "command_key",
    "send_commands",
]

Command = tuple[bytes | str, ...]


class ReplicaWaitTimeout(TransientError):
    """Fewer replicas than REDIS_WAIT_REPLICAS acknowledged a write round trip in time."""


class Packed(NamedTuple):
    """One command already in RESP, in pieces sent as they are (no copy to join them),
    and its key (to route it on a cluster)."""

    pieces: tuple[bytes, ...]
    key: bytes = b""


def command_key(command: Command | Packed) -> bytes | str | None:
    """Pure: the key ``command`` acts on (the first key of an EVAL), None for a keyless one
    (MULTI, EXEC): what routes it on a cluster."""
    if isinstance(command, Packed):
        return command.key or None
    name = command[0].upper() if isinstance(command[0], bytes) else command[0].upper().encode()
    if name in (b"EVAL", b"EVALSHA"):
        return command[3] if len(command) > 3 and command[2] not in (b"0", "0") else None
    return command[1] if len(command) > 1 else None


def group_by_node(nodes: Sequence[str | None]) -> list[list[int]]:
    """Pure: the command indexes per node, nodes in the order of their first command; a
    keyless command (None) goes with the first keyed one's node (one MULTI/EXEC's
    commands share a slot)."""
    first = next((node for node in nodes if node is not None), None)
    groups: dict[str | None, list[int]] = {}
    for index, node in enumerate(nodes):
        groups.setdefault(node if node is not None else first, []).append(index)
    return list(groups.values())


async def send_commands(
    redis: Redis | RedisCluster,
    commands: Sequence[Command | Packed],
    *,
    wait: tuple[int, int] | None = None,
) -> list[Any]:
    """Send ``commands`` in one write and read every reply (one round trip; on a
    cluster one per node serving them, one node after the other: module docstring).

    Error replies come back as :class:`redis.exceptions.ResponseError` objects in
    the list, so the caller sees which command failed. Raises
    redis.exceptions.ConnectionError / TimeoutError when the connection fails (the
    connection is dropped, never returned to the pool half-read); on a cluster,
    SlotNotCoveredError when no node serves a key's slot. Each read waits at most the
    client's socket timeout.

    ``wait`` (replicas, timeout ms) ends each connection's round trip with a WAIT; when
    every command succeeded but a WAIT counted fewer replicas, raises
    :class:`ReplicaWaitTimeout` (after every reply was read).
    """
    if not commands:
        return []
    if isinstance(redis, RedisCluster):
        replies, acked = await _send_per_node(redis, commands, wait)
    else:
        pool = redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            replies, acked = _split_wait(await _exchange(conn, _with_wait(commands, wait)), wait)
        finally:
            await pool.release(conn)
    failed = any(isinstance(reply, ResponseError) for reply in replies)
    if wait is not None and acked < wait[0] and not failed:  # an error is raised anyway
        raise ReplicaWaitTimeout(
            f"{acked} of {wait[0]} Redis replicas acknowledged the entries within "
            f"{wait[1]} ms (REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS)"
        )
    return replies


def _with_wait(
    commands: Sequence[Command | Packed], wait: tuple[int, int] | None
) -> Sequence[Command | Packed]:
    if wait is None:
        return commands
    return [*commands, (b"WAIT", str(wait[0]), str(wait[1]))]


def _split_wait(replies: list[Any], wait: tuple[int, int] | None) -> tuple[list[Any], int]:
    """The commands' replies and the WAIT's count (0 without a WAIT, or for an error reply
    to it)."""
    if wait is None:
        return replies, 0
    acked = replies[-1]
    return replies[:-1], acked if isinstance(acked, int) else 0


async def _exchange(conn: Connection, commands: Sequence[Command | Packed]) -> list[Any]:
    """One write of ``commands`` on ``conn`` and every reply read (errors as objects);
    ``conn`` is dropped if anything fails half-way."""
    try:
        chunks: list[bytes] = []
        for command in commands:
            if isinstance(command, Packed):
                chunks.extend(command.pieces)
            else:
                chunks.append(_pack(command))
        await conn.send_packed_command(chunks)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as error:
                replies.append(error)
    except BaseException:
        await conn.disconnect()
        raise
    return replies


async def _send_per_node(
    cluster: RedisCluster, commands: Sequence[Command | Packed], wait: tuple[int, int] | None
) -> tuple[list[Any], int]:
    await cluster.initialize()  # the slot map: loaded once (again after a MOVED, below)
    nodes: dict[str, ClusterNode] = {}
    names: list[str | None] = []
    for command in commands:
        key = command_key(command)
        node = None if key is None else cluster.get_node_from_key(key)  # type: ignore[arg-type]
        if node is not None:
            nodes[node.name] = node
        names.append(None if node is None else node.name)
    replies: list[Any] = [None] * len(commands)
    acked = wait[0] if wait is not None else 0
    for indexes in group_by_node(names):
        name = next((names[i] for i in indexes if names[i] is not None), None)
        node = nodes[name] if name is not None else cluster.get_random_node()
        conn = node.acquire_connection()
        try:
            sent = _with_wait([commands[i] for i in indexes], wait)
            got, node_acked = _split_wait(await _exchange(conn, sent), wait)
        except (RedisConnectionError, RedisTimeoutError):
            # the node is down (a failover under way): the next try asks the cluster
            # for the map again, which names its replica once promoted
            with contextlib.suppress(RedisError):
                await cluster.nodes_manager.initialize()
            raise
        finally:
            node.release(conn)
        acked = min(acked, node_acked)
        for index, reply in zip(indexes, got, strict=True):
            replies[index] = reply
    if any(isinstance(reply, AskError) for reply in replies):  # MovedError is one too
        await cluster.nodes_manager.initialize()  # slots moved: the next try routes anew
    return replies, acked


# hiredis' stub types the argument as a 1-tuple; any tuple of bytes/str works.
_pack: Callable[[Command], bytes] = hiredis.pack_command  # type: ignore[assignment]


class StreamWriter:
    """The producer's only Redis writer for one view.

    It never trims: trimming is the consumers' (consumer/retention.py), since only
    they know what has been acknowledged.
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        keys: Keys,
        *,
        progress_interval_ms: int,
        metrics: ProducerMetrics | None = None,
        clock: Callable[[], float] = time.time,
        lease: Callable[[], str] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        """``lease`` gives the producer lease value held now (producer.lease); without it
        the checkpoint is not fenced (only ever raised). ``wait_replicas`` > 0: WAIT for
        that many replicas after each round trip that adds entries (module docstring)."""
        self._wait = (wait_replicas, wait_timeout_ms) if wait_replicas > 0 else None
        self._redis = redis
        self._keys = keys
        self._streams = [k.encode() for k in keys.streams()]
        self._pacer = ProgressPacer(progress_interval_ms)
        self._metrics = metrics if metrics is not None else ProducerMetrics.unserved()
        self._clock = clock
        self._lease = lease
        self._checkpoint_script = FENCED_CHECKPOINT if lease is not None else MONOTONIC_CHECKPOINT

    def _raise_high_water(self, ts: int) -> Command:
        return (b"ZADD", self._keys.high_water.encode(), b"GT", str(ts), HIGH_WATER_MEMBER)

    def _move_checkpoint(self, frontier: int, *, mark: bool) -> Command:
        """The checkpoint's script; with ``mark`` it raises the high-water mark to the
        frontier first, under the same lease check (producer.lease.FENCED_CHECKPOINT)."""
        lease = self._lease() if self._lease is not None else ""
        return (
            b"EVAL",
            self._checkpoint_script,
            b"3",
            self._keys.producer_lease.encode(),
            self._keys.checkpoint.encode(),
            self._keys.high_water.encode(),
            lease,
            str(frontier),
            str(frontier) if mark else "",
            HIGH_WATER_MEMBER,
        )

    @staticmethod
    def _xadd(stream: bytes, fields: dict[bytes, bytes]) -> Command:
        return (b"XADD", stream, b"*", *chain.from_iterable(fields.items()))

    async def _send_waited(
        self, commands: Sequence[Command | Packed], *, wait: bool = True
    ) -> list[Any]:
        try:
            return await send_commands(self._redis, commands, wait=self._wait if wait else None)
        except ReplicaWaitTimeout:
            self._metrics.replica_wait_timeouts.inc()
            raise

    async def _send_marked(
        self, commands: Sequence[Command | Packed], *, wait: bool = True
    ) -> list[Any]:
        """Send ``commands``, the first of them the high-water mark's ZADD; every reply,
        as :func:`send_commands`. On a cluster the ZADD goes first, alone (WAITed when
        configured), and nothing else is sent unless it succeeded (module docstring).
        Raises as :func:`send_commands` does, and on a cluster the ZADD's error reply
        (ResponseError, e.g. MovedError)."""
        if not isinstance(self._redis, RedisCluster):
            return await self._send_waited(commands, wait=wait)
        mark = await self._send_waited(commands[:1])
        raise_first_error(mark)
        return [*mark, *await self._send_waited(commands[1:], wait=wait)]

    async def write(
        self,
        entries: Sequence[Entry],
        dead_letters: Sequence[DeadLetter] = (),
        *,
        high_water: int | None = None,
    ) -> None:
        """XADD ``entries`` and ``dead_letters``, count changes into ``written:p<N>``.

        ``high_water`` is the highest ts among ``entries`` (required with entries).
        One round trip. Raises ResponseError if Redis refused any command (e.g. OOM),
        ConnectionError/TimeoutError if the connection failed; either way nothing
        may be assumed written and the caller resumes from the checkpoint.
        """
        if not entries and not dead_letters:
            return
        commands: list[Command | Packed] = []
        if entries:
            if high_water is None:
                raise ValueError("entries need their highest ts as high_water")
            commands.append(self._raise_high_water(high_water))
        written: dict[int, int] = {}
        ops: dict[bytes, int] = {}
        upserts = 0
        changes = 0
        for entry in entries:
            stream = self._streams[entry.partition]
            head = b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n$1\r\n*\r\n" % (
                entry.width + 3,
                len(stream),
                stream,
            )
            commands.append(Packed((head, entry.body), stream))
            written[entry.partition] = written.get(entry.partition, 0) + entry.changes
            ops[entry.op] = ops.get(entry.op, 0) + 1
            upserts += entry.upserts
            changes += entry.changes
        for partition, count in written.items():
            counts = self._keys.counts(partition).encode()
            commands.append(
                (b"HINCRBY", counts, self._keys.written_field(partition).encode(), str(count))
            )
        dlq = self._keys.dlq.encode()
        for letter in dead_letters:
            commands.append(self._xadd(dlq, encode_dead_letter(letter)))
        if entries:
            raise_first_error(await self._send_marked(commands))
        else:
            raise_first_error(await self._send_waited(commands))
        for op, count in ops.items():
            self._metrics.entries(op, count)
        self._metrics.changes(UPSERT, upserts)
        self._metrics.changes(DELETE, changes - upserts)
        self._metrics.dead_letters.inc(len(dead_letters))

    async def commit(self, frontier: int) -> None:
        """SET checkpoint = ``frontier``, then progress entries to every partition (if due).

        Call only after :meth:`write` returned for every change below ``frontier``.
        The checkpoint's script raises the high-water mark to ``frontier`` first when
        progress entries are due, under the lease check, and only then are they
        written: a producer that lost its lease (paused past it) is refused there and
        never writes a progress entry above the mark its successor read on taking the
        lease. Otherwise that entry could land before the successor's snapshot rows
        (declared at or above the mark) and move consumers' applied frontier past rows
        not yet indexed (``python -m tests.sim --seed 74465``). A checkpoint moved and
        its progress entries lost (a crash between the two round trips) only delays
        the applied frontier until the next ones. Raises as :meth:`write` does, and
        :class:`~producer.lease.ProducerFenced` when the lease is not ours (nothing
        written).
        """
        now = self._clock() * 1000
        progress = self._pacer.due(now, frontier)
        # WAITed with progress: entries on other nodes will rely on the mark it raises
        replies = await self._send_waited([self._move_checkpoint(frontier, mark=progress)],
                                          wait=progress)  # fmt: skip
        raise_first_error(replies)
        if replies[-1] == -1:
            raise ProducerFenced(
                f"the producer lease of {self._keys.prefix} is no longer ours: "
                f"checkpoint {frontier} not written"
            )
        if progress:
            fields = encode_progress(frontier)
            commands = [self._xadd(stream, fields) for stream in self._streams]
            raise_first_error(await self._send_waited(commands, wait=False))
            self._pacer.sent(now, frontier)
            self._metrics.entries(PROGRESS, len(self._streams))
        self._metrics.set_frontier(frontier)

    async def mark_reconcile(self, ts: int) -> None:
        """reconcile[ts] = pending, then a reconcile entry (``op`` ``r``) to every partition.

        Call after every change of the snapshot taken at ``ts`` was written and
        before the checkpoint passes ``ts``: consumers then delete documents whose
        version is below ``ts`` once every partition has applied through it. The
        pending reconcile goes first: a marker raises its partition's snapshot floor,
        below which consumers settle changes unsent (consumer.batch), so a marker
        without its reconcile (the producer killed between the two) would leave a
        document deleted below ``ts`` in the index for good
        (``python -m tests.sim --seed 196 --polling``). A reconcile without markers
        only runs once the frontiers pass ``ts``, after the snapshot's rows. Only the
        lease holder marks one (producer.lease.FENCED_RECONCILE): raises
        :class:`~producer.lease.ProducerFenced` otherwise, nothing written.
        """
        reconcile = self._keys.reconcile.encode()
        pending: Command = (b"HSET", reconcile, str(ts), RECONCILE_PENDING)
        if self._lease is not None:  # the value may be "" (loss noticed): fenced too
            lease = self._keys.producer_lease.encode()
            checked = (self._lease(), str(ts), RECONCILE_PENDING)
            pending = (b"EVAL", FENCED_RECONCILE, b"2", lease, reconcile, *checked)
        reply = await send_commands(self._redis, [pending])
        raise_first_error(reply)
        if reply[0] == -1:
            raise ProducerFenced(
                f"the producer lease of {self._keys.prefix} is no longer ours: "
                f"reconcile at {ts} not marked"
            )
        fields = encode_reconcile(ts)
        commands: list[Command] = [self._raise_high_water(ts)]
        commands.extend(self._xadd(stream, fields) for stream in self._streams)
        raise_first_error(await self._send_marked(commands))
        self._metrics.entries(RECONCILE, len(self._streams))
        self._metrics.reconciles.inc()

    async def read_high_water(self) -> int | None:
        """The high-water mark (no entry or progress entry is above it), or None when
        there is none. Raises RedisError."""
        score = await self._redis.zscore(self._keys.high_water, HIGH_WATER_MEMBER)
        return None if score is None else int(score)

    async def read_checkpoint(self) -> int | None:
        """The stored frontier, or None when there is none. Raises ValueError if unreadable."""
        raw = await self._redis.get(self._keys.checkpoint)
        if raw is None:
            return None
        return int(raw)
