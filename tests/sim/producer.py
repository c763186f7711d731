"""The producer in the simulation: its own session and service code on modelled services.

* :class:`SimMaterialize` is the view and its history: changes are staged by the
  schedule and closed at Materialize's ticks (every :data:`TICK_S` virtual seconds,
  timestamp = the tick's wall-clock ms), and every subscription gets what
  Materialize gives a ``SUBSCRIBE … WITH (PROGRESS)`` declared ``AS OF`` a time:
  the progress row at the AS OF, the snapshot at the AS OF (if declared), every
  closed change after it, then per tick that tick's rows and a progress row, in
  either envelope (diffs: retraction and insertion rows; upsert: the key's state).
  It compacts as Materialize does: with ``retain_ms`` (its RETAIN HISTORY; the
  schedule picks one) every tick raises ``since`` to the tick's ts + 1 - retain_ms,
  and an AS OF below ``since`` is refused at the first FETCH (where the emulator
  starts a cursor's subscription; the session handles a refusal at DECLARE too)
  with Materialize's error, before any row.
* :class:`SimRowSource` is producer.ports.RowSource on it: FETCH returns between 1
  and :data:`FETCH_MAX` rows (so a timestamp's rows are split across FETCHes),
  blocks while nothing is queued, raises QueryCanceled after a cancel and an
  OperationalError when the connection is lost (Faults.mz_error).
  tests/integration/test_sim_materialize_contract.py runs the same checks on it and
  on the product's Subscription against the Materialize emulator (devstack/mzemu).
* :class:`SimEntrySink` is producer.ports.EntrySink as producer.writer.StreamWriter
  does it on Redis, command by command on tests.sim.streams.RedisModel: ``write``
  is one pipeline (ZADD high_water GT, the XADDs, HINCRBY written, the dead
  letters), ``commit`` another (the fenced checkpoint script: -1 when the lease value
  differs, raise only up, and the high-water mark raised under the fence when progress
  entries are due), then a third with those progress entries;
  a connection failure cuts a pipeline between any two commands or loses its
  replies. tests/integration/test_sim_contract.py runs the real StreamWriter and
  this model through the same steps.
* :class:`SimProducerLease` is producer.lease.ProducerLease's protocol on the model.
* :class:`SimProducer` is producer.service's own session loop (``_Producer``:
  lead, the lease keeper, sessions with backoff, fenced stand-by, the pause that
  ends a session) with those ports; only ``_attempt`` is restated, to hand the
  session the simulated row source instead of Materialize's.

The invariant checked here: whenever the checkpoint moves to F, every change of
the history below F is in a stream, or under a reconcile marker at M at or above
it whose snapshot state (the key's upsert at M, or the key gone) is in the streams
(:meth:`SimEntrySink.check_checkpoint`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final

import psycopg
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from searchsync.common.backoff import Backoff
from searchsync.common.buffer import outstanding_changes
from searchsync.common.config import Settings
from searchsync.common.entries import (
    DeadLetter,
    EntryError,
    Marker,
    decode_entry_parts,
    encode_dead_letter,
    encode_progress,
    encode_reconcile,
)
from searchsync.common.keys import RECONCILE_PENDING, Keys
from searchsync.consumer.highwater import HIGH_WATER_MEMBER
from searchsync.producer.backpressure import POLL_SECONDS, Hysteresis
from searchsync.producer.batches import Entry
from searchsync.producer.documents import DocumentEncoder
from searchsync.producer.lease import ProducerFenced, hold_seconds, tick_seconds
from searchsync.producer.metrics import ProducerMetrics
from searchsync.producer.progress import ProgressPacer
from searchsync.producer.resume import plan_start
from searchsync.producer.rows import Layout
from searchsync.producer.service import _Producer
from searchsync.producer.session import SubscribeSession
from searchsync.producer.writer import group_by_node

from .services import SimProcess
from .world import PROCESS, World

__all__ = [
    "COLUMNS",
    "FETCH_MAX",
    "REFUSED_AS_OF",
    "TICK_S",
    "SimEntrySink",
    "SimMaterialize",
    "SimProducer",
    "SimProducerLease",
    "SimRowSource",
]

# Materialize closes a timestamp this often (virtual seconds).
TICK_S: Final = 0.5
# A FETCH returns at most this many rows (a random number from 1 up).
FETCH_MAX: Final = 6
# The view's columns: the key, and a value OpenSearch maps as a float (a value that is
# no number is a mapping error: the planted poison row).
COLUMNS: Final = ("order_id", "order_total_amount")
# Materialize's idle_in_transaction_session_timeout in the simulation: a pause longer
# than half of it ends the session (producer.session.PAUSE_FRACTION).
IDLE_TIMEOUT_S: Final = 6.0
# What Materialize (and the emulator: devstack.mzemu.errors.impossible_timestamp) says
# when an AS OF is below the view's since (SQLSTATE 22000).
REFUSED_AS_OF: Final = "could not find a valid timestamp for the query"

Values = tuple[object, ...]
Row = tuple[Any, ...]


class SimMaterialize:
    """The view: its closed history, the changes staged for the next tick, its SUBSCRIBEs."""

    def __init__(self, world: World, envelope: str, retain_ms: int | None = None) -> None:
        self.world = world
        self.envelope = envelope
        # RETAIN HISTORY: how far back an AS OF may go (None: for ever, nothing compacts)
        self.retain_ms = retain_ms
        self.since = 0  # the oldest readable time: an AS OF below it is refused
        # closed timestamps in order: (ts, key -> the key's row after ts, None if gone)
        self.log: list[tuple[int, dict[str, Values | None]]] = []
        self.rows: dict[str, Values] = {}  # the view now (closed)
        self.last_change: dict[str, int] = {}  # key -> ts of its last change
        self.staged: dict[str, Values | None] = {}
        self.upper = world.now_ms() + 1  # every timestamp below is closed
        # in the order they started (a dict: a set's order follows the objects' addresses,
        # so which producer's FETCH a tick woke first changed from run to run)
        self.subscriptions: dict[SimRowSource, None] = {}
        self._ticked = asyncio.Event()  # set (and replaced) at every tick

    def stage(self, key: str, values: Values | None) -> None:
        self.staged[key] = values

    async def run(self) -> None:
        """Tick for ever (every :data:`TICK_S` virtual seconds)."""
        while True:
            await asyncio.sleep(TICK_S)
            self.tick()

    def tick(self) -> int:
        """Close the staged changes at the tick's time, move the upper, compact; the ts."""
        ts = max(self.world.now_ms(), self.upper)
        # what the tick changes in the view (a key inserted and deleted again between
        # two ticks has no change at all)
        changes = {k: v for k, v in self.staged.items() if self.rows.get(k) != v}
        before = {key: self.rows.get(key) for key in changes}
        self.staged.clear()
        if changes:
            self.log.append((ts, changes))
            for key, values in changes.items():
                if values is None:
                    self.rows.pop(key, None)
                else:
                    self.rows[key] = values
                self.last_change[key] = ts
            self.world.note(f"materialize ts {ts}: {sorted(changes)}")
        self.upper = ts + 1
        if self.retain_ms is not None:  # the emulator's compaction, every tick
            self.compact(ts + 1 - self.retain_ms)
        rows = self._rows(ts, before, changes)
        for subscription in list(self.subscriptions):
            subscription.push([*rows, _progress(self.upper)])
        ticked, self._ticked = self._ticked, asyncio.Event()
        ticked.set()
        return ts

    def compact(self, since: int) -> None:
        """Forget history at times below ``since`` (at most the last closed time)."""
        self.since = max(self.since, min(since, self.upper - 1))

    async def next_tick(self) -> None:
        """Wait for the next tick."""
        await self._ticked.wait()

    def start(self, as_of: int | None, *, at_least: bool = False) -> int:
        """The time a subscription declared ``AS OF [AT LEAST] as_of`` reads at (None:
        the last closed time; AT LEAST: not below ``since``), resolved at the first
        FETCH as the emulator does. Raises psycopg.errors.DataException,
        Materialize's error, for a plain AS OF below ``since``."""
        if as_of is None:
            return self.upper - 1
        if at_least:
            return max(as_of, self.since)
        if as_of < self.since:
            raise psycopg.errors.DataException(REFUSED_AS_OF)
        return as_of

    def _rows(
        self, ts: int, before: dict[str, Values | None], after: dict[str, Values | None]
    ) -> list[Row]:
        """The SUBSCRIBE rows of one closed timestamp, in this view's envelope."""
        text = str(ts)
        rows: list[Row] = []
        for key in sorted(after):
            old, new = before.get(key), after[key]
            if old == new:
                continue
            if self.envelope == "upsert":
                if new is None:
                    rows.append((text, False, "delete", key, None))
                else:
                    rows.append((text, False, "upsert", *new))
                continue
            if old is not None:
                rows.append((text, False, -1, *old))
            if new is not None:
                rows.append((text, False, 1, *new))
        return rows

    def opening(self, as_of: int, snapshot: bool) -> list[Row]:
        """What a subscription declared AS OF ``as_of`` is given at once."""
        state: dict[str, Values] = {}
        later: list[Row] = []
        for ts, changes in self.log:
            if ts <= as_of:
                for key, values in changes.items():
                    if values is None:
                        state.pop(key, None)
                    else:
                        state[key] = values
            else:
                before = {key: state.get(key) for key in changes}
                later.extend(self._rows(ts, before, changes))
                for key, values in changes.items():
                    if values is None:
                        state.pop(key, None)
                    else:
                        state[key] = values
        rows: list[Row] = [_progress(as_of)]
        if snapshot:
            snap = self.state_at(as_of)
            text = str(as_of)
            for key in sorted(snap):
                if self.envelope == "upsert":
                    rows.append((text, False, "upsert", *snap[key]))
                else:
                    rows.append((text, False, 1, *snap[key]))
        rows.extend(later)
        if self.upper > as_of:
            rows.append(_progress(self.upper))
        return rows

    def state_at(self, as_of: int) -> dict[str, Values]:
        """The view as of ``as_of``, from the closed history."""
        state: dict[str, Values] = {}
        for ts, changes in self.log:
            if ts > as_of:
                break
            for key, values in changes.items():
                if values is None:
                    state.pop(key, None)
                else:
                    state[key] = values
        return state

    def changes_below(self, frontier: int) -> list[tuple[int, str]]:
        """(ts, key) of every change of the history below ``frontier``."""
        out: list[tuple[int, str]] = []
        for ts, changes in self.log:
            if ts >= frontier:
                break
            out.extend((ts, key) for key in changes)
        return out


def _progress(ts: int) -> Row:
    return (str(ts), True, None, None, None)


class SimRowSource:
    """producer.ports.RowSource: one SUBSCRIBE cursor on :class:`SimMaterialize`."""

    def __init__(self, mz: SimMaterialize, process: SimProcess, settings: Settings) -> None:
        self.mz = mz
        self.process = process
        self.world = mz.world
        self._envelope = settings.subscribe_envelope
        self._key_column = settings.key_column
        self.layout: Layout | None = None
        self.encoder: DocumentEncoder | None = None
        self._queue: list[Row] = []
        self._changed = asyncio.Event()
        self._cancelled = False
        self._closed = False
        # the DECLARE's AS OF, SNAPSHOT and AT LEAST, resolved at the first FETCH (None:
        # not declared or already started)
        self._declared: tuple[int | None, bool, bool] | None = None
        self.fetch_max = FETCH_MAX  # a FETCH returns 1 to this many rows
        self._lost = False  # the connection is gone: every call fails

    def lose(self) -> None:
        """The connection is lost (Materialize restarted, a cut): a waiting FETCH fails."""
        self._lost = True
        self._changed.set()

    def push(self, rows: Sequence[Row]) -> None:
        self._queue.extend(rows)
        self._changed.set()

    async def declare(self, *, as_of: int | None, snapshot: bool, at_least: bool = False) -> None:
        await self.process.gate()
        if self.world.faults.mz_error and self.world.rng.random() < self.world.faults.mz_error:
            raise psycopg.OperationalError("sim: connection to Materialize lost (DECLARE)")
        self._declared = (as_of, snapshot, at_least)

    def _start(self, as_of: int | None, snapshot: bool, at_least: bool) -> None:
        """The first FETCH starts the subscription (or raises Materialize's refusal)."""
        name = self.process.name
        try:
            start = self.mz.start(as_of, at_least=at_least)
        except psycopg.Error:
            self.world.note(f"{name} SUBSCRIBE AS OF {as_of} refused (since {self.mz.since})")
            raise
        self.world.note(f"{name} SUBSCRIBE AS OF {start} snapshot={snapshot}")
        if snapshot and (as_of is None or at_least):  # a snapshot the producer writes
            self.world.checker.snapshots.append(start)
        self._queue = self.mz.opening(start, snapshot)
        self.mz.subscriptions[self] = None

    async def fetch(self) -> list[Row]:
        world, rng = self.world, self.world.rng
        await self.process.gate()
        if self._declared is not None:
            as_of, snapshot, at_least = self._declared
            # AS OF AT LEAST a time not closed yet: the subscription starts once it is
            while at_least and as_of is not None and as_of >= self.mz.upper:
                if self._cancelled or self._lost:
                    break
                await self.mz.next_tick()
            else:
                self._declared = None
                self._start(as_of, snapshot, at_least)
        while not self._queue and not self._cancelled and not self._lost:
            self._changed.clear()
            await self._changed.wait()
        await self.process.gate()  # paused (or killed) while it waited
        if self._lost:
            raise psycopg.OperationalError("sim: server closed the connection unexpectedly")
        if self._cancelled:
            self._cancelled = False
            raise psycopg.errors.QueryCanceled("canceling statement due to user request")
        if world.faults.mz_error and rng.random() < world.faults.mz_error:
            world.note(f"{self.process.name} FETCH: connection to Materialize lost")
            raise psycopg.OperationalError("sim: connection to Materialize lost")
        count = rng.randint(1, self.fetch_max)
        rows, self._queue = self._queue[:count], self._queue[count:]
        if self.layout is None:
            third = "mz_diff" if self._envelope == "diffs" else "mz_state"
            names = ["mz_timestamp", "mz_progressed", third, *COLUMNS]
            self.layout = Layout.from_columns(names, self._envelope, self._key_column)
            self.encoder = DocumentEncoder(COLUMNS, ("plain", "plain"))
        return rows

    async def cancel(self) -> None:
        self._cancelled = True
        self._changed.set()

    async def close(self) -> None:
        self._closed = True
        self.mz.subscriptions.pop(self, None)


# a command of the producer's round trip and the key that routes it on a cluster
Routed = tuple[str, Callable[[], object]]


class SimEntrySink:
    """producer.ports.EntrySink as producer.writer.StreamWriter writes to Redis."""

    def __init__(
        self,
        world: World,
        process: SimProcess,
        *,
        progress_interval_ms: int,
        lease: Callable[[], str] | None = None,
        mz: SimMaterialize | None = None,
    ) -> None:
        self.world = world
        self.redis = world.redis
        self.keys: Keys = world.keys
        self.process = process
        self._pacer = ProgressPacer(progress_interval_ms)
        self._lease = lease
        self._mz = mz
        # the writer before the fix of seed 74465 (plant progress-before-fence): progress
        # entries and their mark in the round trip before the fenced checkpoint script
        self.progress_first = False
        # and before seed 196's (plant markers-before-pending): the markers, then the HSET
        self.markers_first = False

    async def _pipeline(self, what: str, commands: list[Callable[[], object]]) -> list[object]:
        """Run ``commands`` as one round trip: a connection failure before it is sent,
        between two commands (the first ones ran), or after all ran (replies lost)."""
        world, rng = self.world, self.world.rng
        await self.process.enter(what)
        cut = len(commands) + 1
        if world.faults.redis_error and rng.random() < world.faults.redis_error / 2:
            cut = rng.randint(0, len(commands))
        replies = [command() for command in commands[:cut]]
        if cut <= len(commands):
            world.note(f"{self.process.name} {what} cut after {cut} of {len(commands)}")
            raise RedisConnectionError("sim: pipeline cut")
        await self.process.leave(what)
        return replies

    def _raise_high_water(self, ts: int) -> None:
        marks = self.redis.zset(self.keys.high_water)
        member = HIGH_WATER_MEMBER.decode()
        if ts > marks.get(member, float("-inf")):
            marks[member] = ts

    def _xadd(self, partition: int, fields: dict[bytes, bytes]) -> bytes:
        stream = self.keys.stream(partition)
        entry_id = self.redis.xadd(stream, fields)
        self.world.wake(stream)
        checker = self.world.checker
        top = checker.progress_top.get(partition, 0)
        for key, ts in _data_changes(fields):
            checker.in_streams.add((key, ts))
            if ts < top:  # written after a progress entry that claims ts complete
                checker.late.add((stream, entry_id))
        return entry_id

    def _progress_to(self, partition: int, frontier: int) -> None:
        self._xadd(partition, encode_progress(frontier))
        checker = self.world.checker
        checker.last_progress[partition] = frontier
        checker.progress_top[partition] = max(checker.progress_top.get(partition, 0), frontier)

    def _routed(self, commands: list[Routed]) -> list[Callable[[], object]]:
        """``(key, command)`` in the order producer.writer sends them: as built on one
        Redis; on a cluster of world.redis_nodes masters (slots in equal ranges) grouped by
        node, nodes in the order of their first command, one after the other (a cut
        anywhere in that order is a node's round trip failing)."""
        nodes = self.world.redis_nodes
        if nodes <= 1:
            return [command for _, command in commands]
        names: list[str | None] = [
            str(key_slot(key.encode()) * nodes // 16384) for key, _ in commands
        ]
        return [commands[i][1] for group in group_by_node(names) for i in group]

    async def write(
        self,
        entries: Sequence[Entry],
        dead_letters: Sequence[DeadLetter] = (),
        *,
        high_water: int | None = None,
    ) -> None:
        if not entries and not dead_letters:
            return
        keys = self.keys
        commands: list[Routed] = []
        if entries:
            if high_water is None:
                raise ValueError("entries need their highest ts as high_water")
            commands.append((keys.high_water, lambda: self._raise_high_water(high_water)))
        written: dict[int, int] = {}
        for entry in entries:
            commands.append((keys.stream(entry.partition), partial(self._note_xadd, entry)))
            written[entry.partition] = written.get(entry.partition, 0) + entry.changes
        for partition, count in written.items():
            key, field = keys.counts(partition), keys.written_field(partition)
            commands.append((key, partial(self.redis.hincrby, key, field, count)))
        for letter in dead_letters:
            commands.append((keys.dlq, partial(self._letter, letter)))
        await self._pipeline("write", self._routed(commands))

    def _note_xadd(self, entry: Entry) -> None:
        fields = entry.fields
        entry_id = self._xadd(entry.partition, fields)
        self.world.note(f"{self.process.name} p{entry.partition} {entry_id.decode()} {fields}")

    def _letter(self, letter: DeadLetter) -> None:
        self.redis.xadd(self.keys.dlq, encode_dead_letter(letter))
        self.world.checker.on_letter(letter)
        self.world.note(f"{self.process.name} dead letter {letter.key!r}: {letter.reason}")

    def _checkpoint_script(self, lease: str, frontier: int, mark: bool) -> int:
        """producer.lease.FENCED_CHECKPOINT (MONOTONIC_CHECKPOINT without a lease); with
        ``mark`` it raises the high-water mark to the frontier first, under the fence."""
        if self._lease is not None and self.redis.get(self.keys.producer_lease) != lease:
            return -1
        if mark:
            self._raise_high_water(frontier)
        current = self.redis.get(self.keys.checkpoint)
        if current is None or int(current) < frontier:
            self.check_checkpoint(frontier)
            self.redis.strings[self.keys.checkpoint] = (str(frontier), None)
            self.world.note(f"{self.process.name} checkpoint {frontier}")
            return 1
        return 0

    def check_checkpoint(self, frontier: int) -> None:
        """The invariant: every change of the history below ``frontier`` is in a stream."""
        if self._mz is None:
            return
        checker = self.world.checker
        for ts, key in self._mz.changes_below(frontier):
            if (key.encode(), ts) not in checker.in_streams and not self._covered(key, ts):
                checker.key = key.encode()
                checker.fail(
                    f"checkpoint moved to {frontier} past change {key}@{ts}, which is in no stream"
                )

    def _covered(self, key: str, ts: int) -> bool:
        """Whether a reconcile marker at M >= ts stands for the change: the key's state at
        M is in the streams (live: its snapshot upsert at M; gone: the reconcile's)."""
        assert self._mz is not None
        for marker in sorted(self.world.checker.markers):
            if marker < ts:
                continue
            live = key in self._mz.state_at(marker)
            if not live or (key.encode(), marker) in self.world.checker.in_streams:
                return True
        return False

    async def commit(self, frontier: int) -> None:
        now = self.world.clock.time() * 1000
        progress = self._pacer.due(now, frontier)
        lease = self._lease() if self._lease is not None else ""
        if self.progress_first:
            await self._commit_progress_first(now, frontier, lease, progress)
            return
        replies = await self._pipeline(
            "commit", [lambda: self._checkpoint_script(lease, frontier, progress)]
        )
        if replies[-1] == -1:
            self._fenced(frontier, progress)
        if progress:
            routed: list[Routed] = [
                (self.keys.stream(partition), partial(self._progress_to, partition, frontier))
                for partition in range(self.world.partitions)
            ]
            await self._pipeline("commit progress", self._routed(routed))
            self._pacer.sent(now, frontier)
            self.world.note(f"{self.process.name} progress {frontier}")

    def _fenced(self, frontier: int, progress: bool) -> None:
        self.world.note(f"{self.process.name} checkpoint {frontier} fenced")
        if progress:
            self.world.checker.fenced_progress += 1
        raise ProducerFenced(f"sim: the producer lease is not ours: checkpoint {frontier}")

    async def _commit_progress_first(
        self, now: float, frontier: int, lease: str, progress: bool
    ) -> None:
        routed: list[Routed] = []
        if progress:
            routed.append((self.keys.high_water, lambda: self._raise_high_water(frontier)))
            for partition in range(self.world.partitions):
                routed.append(
                    (self.keys.stream(partition), partial(self._progress_to, partition, frontier))
                )
        commands = self._routed(routed)
        if self.world.redis_nodes > 1 and commands:
            await self._pipeline("commit progress", commands)
            commands = []
        commands.append(lambda: self._checkpoint_script(lease, frontier, False))
        replies = await self._pipeline("commit", commands)
        if replies[-1] == -1:
            self._fenced(frontier, progress)
        if progress:
            self._pacer.sent(now, frontier)
            self.world.note(f"{self.process.name} progress {frontier}")

    async def mark_reconcile(self, ts: int) -> None:
        if self.markers_first:
            await self._mark_markers_first(ts)
            return
        # reconcile[ts] = pending before the markers, fenced (producer.writer.mark_reconcile)
        table = self.redis.hash(self.keys.reconcile)
        lease = self._lease() if self._lease is not None else None

        def pending() -> int:
            if lease is not None and self.redis.get(self.keys.producer_lease) != lease:
                return -1
            table[str(ts).encode()] = RECONCILE_PENDING
            return 1

        if (await self._pipeline("reconcile", [pending]))[0] == -1:
            self.world.note(f"{self.process.name} reconcile {ts} fenced")
            self.world.checker.fenced_reconciles += 1
            raise ProducerFenced(f"sim: the producer lease is not ours: reconcile {ts}")
        fields = encode_reconcile(ts)
        routed: list[Routed] = [(self.keys.high_water, lambda: self._raise_high_water(ts))]
        for partition in range(self.world.partitions):
            routed.append((self.keys.stream(partition), partial(self._xadd, partition, fields)))
        await self._pipeline("reconcile entries", self._routed(routed))
        self.world.checker.markers.add(ts)

    async def _mark_markers_first(self, ts: int) -> None:
        fields = encode_reconcile(ts)
        routed: list[Routed] = [(self.keys.high_water, lambda: self._raise_high_water(ts))]
        for partition in range(self.world.partitions):
            routed.append((self.keys.stream(partition), partial(self._xadd, partition, fields)))
        await self._pipeline("reconcile entries", self._routed(routed))
        table = self.redis.hash(self.keys.reconcile)
        await self._pipeline(
            "reconcile", [lambda: table.__setitem__(str(ts).encode(), RECONCILE_PENDING)]
        )
        self.world.checker.markers.add(ts)

    async def read_checkpoint(self) -> int | None:
        await self.process.enter("GET checkpoint")
        raw = self.redis.get(self.keys.checkpoint)
        await self.process.leave("GET checkpoint")
        return None if raw is None else int(raw)

    async def read_high_water(self) -> int | None:
        """ZSCORE high_water. Read right after the checkpoint, and not failed or slowed
        here (a failure would end the start like one of the GET before it): drawing no
        randomness for it kept every seed's schedule as it was."""
        await self.process.gate()
        score = self.redis.zset(self.keys.high_water).get(HIGH_WATER_MEMBER.decode())
        return None if score is None else int(score)


def _data_changes(fields: dict[bytes, bytes]) -> list[tuple[bytes, int]]:
    try:
        decoded, _ = decode_entry_parts(fields)
    except EntryError:
        return []
    if isinstance(decoded, Marker):
        return []
    return [(change.key, change.ts) for change in decoded]


class SimBackpressure:
    """producer.ports.Backpressure: producer.backpressure's Hysteresis fed from the model
    every POLL_SECONDS with what BufferMonitor measures (common.buffer.outstanding_changes
    of the counts hash and XINFO GROUPS' pending and lag)."""

    def __init__(self, world: World, settings: Settings) -> None:
        self.world = world
        self._state = Hysteresis(settings.backpressure_threshold, settings.backpressure_resume)
        self._running = asyncio.Event()
        self._running.set()

    @property
    def active(self) -> bool:
        return self._state.active

    async def wait_until_resumed(self) -> None:
        await self._running.wait()

    def measure(self) -> int:
        world, keys = self.world, self.world.keys
        counts: dict[bytes, bytes] = {}
        for partition in range(world.partitions):
            counts.update(world.redis.hash(keys.counts(partition)))
        total = 0
        for partition in range(world.partitions):
            stream = world.redis.stream(keys.stream(partition))
            group = stream.group
            # XINFO GROUPS: lag is exact here (only acknowledged entries are trimmed)
            lag = sum(1 for i in stream.order if i > group.last_delivered and i in stream.entries)
            info = {"pending": len(group.pending), "lag": lag}
            total += outstanding_changes(counts, partition, info, len(stream.entries))
        transition = self._state.observe(total)
        if transition == "activated":
            self._running.clear()
            world.note(f"backpressure on ({total} changes)")
        elif transition == "released":
            self._running.set()
            world.note(f"backpressure off ({total} changes)")
        return total

    async def run(self) -> None:
        while True:
            self.measure()
            await asyncio.sleep(POLL_SECONDS)


class SimProducerLease:
    """producer.lease.ProducerLease on the model (its acquire, renew and release scripts)."""

    def __init__(self, world: World, process: SimProcess, ttl_seconds: float) -> None:
        self.world = world
        self.redis = world.redis
        self.keys = world.keys
        self.process = process
        self.name = process.name
        self.tick = tick_seconds(ttl_seconds)
        self.hold_ms = max(int(hold_seconds(ttl_seconds) * 1000), 1)
        self.value = ""
        self.dead = False  # a crashed process releases nothing

    async def try_acquire(self) -> bool:
        await self.process.enter("acquire producer lease")
        holder = self.redis.get(self.keys.producer_lease)
        got: str | None = None
        if holder is not None and holder == self.value:
            self.redis.pexpire(self.keys.producer_lease, self.hold_ms)
            got = holder
        elif holder is None:
            epoch = self.redis.incr(self.keys.producer_epoch)
            got = f"{epoch}:{self.name}"
            self.redis.set_px(self.keys.producer_lease, got, self.hold_ms)
            self.world.note(f"{self.name} holds the producer lease ({got})")
        await self.process.leave("acquire producer lease")
        if got is None:
            return False
        self.value = got
        return True

    async def lead(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            with contextlib.suppress(RedisConnectionError):
                if await self.try_acquire():
                    return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick)
        return False

    async def keep(self, lost: asyncio.Event) -> None:
        loop = self.world.loop
        vouched = loop.time()
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.process.enter("renew producer lease")
                renewed = self.redis.get(self.keys.producer_lease) == self.value
                if renewed:
                    self.redis.pexpire(self.keys.producer_lease, self.hold_ms)
                await self.process.leave("renew producer lease")
            except RedisConnectionError:
                if loop.time() - vouched >= self.hold_ms / 1000:
                    lost.set()
                    return
                continue
            if not renewed:
                self.world.note(f"{self.name} lost the producer lease ({self.value})")
                self.value = ""
                lost.set()
                return
            vouched = loop.time()

    async def release(self) -> None:
        if self.dead:
            return
        if self.value and self.redis.get(self.keys.producer_lease) == self.value:
            self.redis.delete(self.keys.producer_lease)
        self.value = ""


class _NoRedis:
    """What _Producer.run closes at the end; the simulated ports hold no client."""

    async def aclose(self) -> None:
        return None


class SimProducer(_Producer):
    """producer.service's session loop with the simulated ports (module docstring)."""

    def __init__(
        self,
        world: World,
        name: str,
        mz: SimMaterialize,
        session: type[SubscribeSession] = SubscribeSession,
    ) -> None:
        # not _Producer.__init__: that one connects Redis and Materialize clients
        settings = world.settings
        self.world = world
        self._session_class = session
        self.mz = mz
        self.settings = settings
        self.stop = asyncio.Event()
        self.metrics = ProducerMetrics.unserved()  # nothing serves them
        self.keys = world.keys
        self.process = SimProcess(world, name)
        self.redis = _NoRedis()  # type: ignore[assignment]
        self.lease = SimProducerLease(world, self.process, settings.lease_ttl_seconds)  # type: ignore[assignment]
        self.writer = SimEntrySink(  # type: ignore[assignment]
            world,
            self.process,
            progress_interval_ms=settings.progress_interval_ms,
            lease=lambda: self.lease.value,
            mz=mz,
        )
        self.monitor = SimBackpressure(world, settings)  # type: ignore[assignment]
        self.backoff = Backoff.from_settings(
            settings.retry_initial_backoff,
            settings.retry_max_backoff,
            settings.retry_backoff_multiplier,
        )
        self.refused = False
        self.session = None
        self.crashed = False
        context = contextvars.copy_context()
        context.run(PROCESS.set, self.process)
        self.task = asyncio.create_task(self.run(), name=name, context=context)

    async def _check_layout(self) -> int | None:
        return None  # the sim's streams are made for this layout

    async def _attempt(self, halt: asyncio.Event) -> None:
        """producer.service._Producer._attempt for SUBSCRIBE, with the simulated row source."""
        settings = self.settings
        checkpoint = await self.writer.read_checkpoint()
        high_water = await self.writer.read_high_water()
        plan = plan_start(
            checkpoint,
            discard_snapshot=settings.discard_snapshot,
            refused=self.refused,
            keeps_state=settings.subscribe_envelope == "diffs",
            high_water=high_water,
        )
        self.world.note(f"{self.process.name} start plan: {plan.reason}")
        self.world.sessions += 1
        session = self._session_class(
            settings, self.writer, self.monitor, halt, open_rows=self._open_rows,
            metrics=None, on_streaming=self.backoff.reset,
        )  # fmt: skip
        self.session = session
        await session.run(plan)

    async def _open_rows(self, settings: Settings) -> tuple[SimRowSource, float | None]:
        await self.process.gate()
        if self.world.faults.mz_error and self.world.rng.random() < self.world.faults.mz_error:
            raise psycopg.OperationalError("sim: connection to Materialize refused")
        return SimRowSource(self.mz, self.process, settings), IDLE_TIMEOUT_S

    def crash(self) -> None:
        """kill -9: the process ends where it is, nothing is released (its lease expires
        on its own); a task of it still running stops at its next call for good."""
        self.crashed = True
        self.lease.dead = True  # type: ignore[attr-defined]
        self.process.paused_until = float("inf")
        self.world.note(f"{self.process.name} CRASH")
        for task, owner in self.world.owners.items():
            if owner is self.process and not task.done():
                task.cancel()

    def pause(self, seconds: float) -> None:
        self.world.note(f"{self.process.name} PAUSE {seconds:.2f}s")
        loop = self.world.loop
        self.process.paused_until = max(self.process.paused_until, loop.now + seconds)

    @property
    def alive(self) -> bool:
        return not self.crashed and not self.task.done()
