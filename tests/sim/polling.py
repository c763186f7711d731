"""The polling producer (USE_SUBSCRIBE=false) in the simulation: the real Poller on models.

* :class:`SimPollSource` is producer.ports.PollSource on
  tests.sim.producer.SimMaterialize: a read transaction's timestamp T is the last
  closed time (``upper - 1``) and every read in it sees the view as of T, built from
  the same closed history the SUBSCRIBE model serves; rows come in random order, in
  batches of 1 to :data:`BATCH_MAX`; every call takes a round trip of virtual time,
  waits while the process is paused and fails with an OperationalError at
  Faults.mz_error (so a crash or a pause can land between any two reads).
  The history gives a key at most one row, so key violations are not simulated.
* :class:`SimDigestStore` is producer.ports.DigestStore on the model's hash
  ``poll:digests`` (an emptied hash does not exist, as in Redis): every field set or
  dropped is one command and a connection failure cuts the commands between any two
  (the first ones ran) or loses the reply after all ran; ``remember_at_once`` is a
  MULTI/EXEC: all of it or nothing, its reply maybe lost.
* :class:`SimModalProducer` is tests.sim.producer.SimProducer (producer.service's
  session loop) in either mode: polling runs the real producer.polling.Poller with
  those ports, SUBSCRIBE first drops the digest hash as producer.service does. A
  schedule run with ``polling`` starts its first producer polling and gives every
  later one (a restart after a crash, the producer started at rest) either mode, so
  schedules switch between SUBSCRIBE and polling (the runbook's rollback and back;
  the checkpoint is shared).
* :class:`PollLedger` records the latest change of each key written to a stream and
  checks, whenever a polling producer moves the checkpoint to V + 1, that every
  key's latest stream change at or below V matches the view at V (a document equal
  to the row's, or a delete / nothing for a key not in the view): a poll that
  skipped a change, or digests that claim a write that never happened, break it at
  the next commit. A SUBSCRIBE commit keeps tests.sim.producer's check (every change
  of the history below the checkpoint in a stream) for the changes after the last
  polled checkpoint: the ones below it were checked by that poll's commit.

At rest (:func:`settle_polling`), what consumer.reconcile does once every partition
applied through a full poll's marker T — delete every document whose version is
below T — is applied to the index model (the simulated consumers do not run their
housekeeping), and the view is compared by content at the version each indexed
document carries (a poll writes at V = max(T, checkpoint), not at the row's own
change).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
import psycopg
from redis.exceptions import ConnectionError as RedisConnectionError

from searchsync.common.config import Settings
from searchsync.common.entries import EntryError, Marker, decode_entry_parts
from searchsync.common.keys import RECONCILE_PENDING
from searchsync.producer.documents import DocumentEncoder
from searchsync.producer.lease import ProducerFenced
from searchsync.producer.polling import DIGEST_BYTES, Poller
from searchsync.producer.ports import Columns
from searchsync.producer.session import SubscribeSession

from .producer import COLUMNS, SimEntrySink, SimMaterialize, SimProducer
from .services import ROUND_TRIP_S, SimProcess
from .world import World

__all__ = [
    "BATCH_MAX",
    "POLL_INTERVAL_S",
    "PollLedger",
    "SimDigestStore",
    "SimModalProducer",
    "SimPollSource",
    "settle_polling",
]

# A batch of a poll's rows holds at most this many (a random number from 1 up).
BATCH_MAX: Final = 4
# POLL_INTERVAL in the simulation: a few polls per history step.
POLL_INTERVAL_S: Final = 0.3
# A polling producer is killed at a round trip that writes (Redis commands: the digest
# hash, entries, the checkpoint) with this probability, between any two of its commands,
# at most CRASHES times a schedule (then the schedule comes to rest): the schedule's
# own producer-crash events seldom land inside a poll's few round trips.
CRASH_P: Final = 0.15
CRASHES: Final = 4
_ENCODER = DocumentEncoder(COLUMNS, ("plain", "plain"))
_COLUMNS: Columns = (list(COLUMNS), ["plain", "plain"])
Values = tuple[object, ...]
# (what, commands) -> how many of the commands run before the process dies, or None
CrashPoint = Callable[[str, int], int | None]


def _no_crash(what: str, commands: int) -> int | None:
    return None


class _SimPollRead:
    """producer.ports.PollRead: one read transaction at T (module docstring)."""

    def __init__(self, mz: SimMaterialize, process: SimProcess) -> None:
        self.mz = mz
        self.world = mz.world
        self.process = process
        self._view: dict[str, Values] | None = None
        self._columns: Columns | None = None

    async def _call(self, what: str) -> None:
        world = self.world
        await self.process.gate()
        await asyncio.sleep(world.rng.uniform(0, ROUND_TRIP_S))
        await self.process.gate()
        if world.faults.mz_error and world.rng.random() < world.faults.mz_error:
            world.note(f"{self.process.name} poll {what}: connection to Materialize lost")
            raise psycopg.OperationalError(f"sim: connection to Materialize lost ({what})")

    async def timestamp(self) -> int:
        await self._call("SELECT mz_now()")
        ts = self.mz.upper - 1
        self._view = self.mz.state_at(ts)
        self.world.note(f"{self.process.name} poll reads at {ts}: {sorted(self._view)}")
        return ts

    async def batches(self) -> AsyncIterator[Sequence[Sequence[Any]]]:
        assert self._view is not None, "timestamp() first"
        rng = self.world.rng
        rows = [self._view[key] for key in sorted(self._view)]
        rng.shuffle(rows)  # a view's rows come in no particular order
        while rows:
            await self._call("rows")
            count = rng.randint(1, BATCH_MAX)
            batch, rows = rows[:count], rows[count:]
            self._columns = _COLUMNS
            yield batch

    def columns(self) -> Columns | None:
        return self._columns

    async def rows_of(self, keys: Sequence[str]) -> list[Sequence[Any]]:
        assert self._view is not None, "timestamp() first"
        await self._call("rows of keys")
        self._columns = _COLUMNS
        return [self._view[key] for key in keys if key in self._view]


class SimPollSource:
    """producer.ports.PollSource on :class:`SimMaterialize`."""

    def __init__(self, mz: SimMaterialize, process: SimProcess) -> None:
        self.mz = mz
        self.process = process

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_SimPollRead]:
        read = _SimPollRead(self.mz, self.process)
        await read._call("BEGIN")
        yield read
        await read._call("COMMIT")

    async def close(self) -> None:
        return None


class SimDigestStore:
    """producer.ports.DigestStore on the model's ``poll:digests`` (module docstring)."""

    def __init__(
        self,
        world: World,
        process: SimProcess,
        crash: CrashPoint = _no_crash,
        lease: str | None = None,
    ) -> None:
        self.world = world
        self.redis = world.redis
        self.name = world.keys.poll_digests
        self.process = process
        self._crash = crash
        self._lease = lease  # fenced like producer.adapters.RedisDigestStore's script

    def _fenced(self) -> bool:
        return (
            self._lease is not None
            and self.redis.get(self.world.keys.producer_lease) != self._lease
        )

    def _set(self, key: str, value: bytes | None) -> None:
        table = self.redis.hashes.setdefault(self.name, {})
        if value is None:
            table.pop(key.encode(), None)
        else:
            table[key.encode()] = value
        if not table:  # Redis drops an emptied hash
            del self.redis.hashes[self.name]

    async def _commands(self, what: str, commands: list[Callable[[], None]]) -> None:
        """One round trip of commands that a connection failure may cut between any two."""
        world, rng = self.world, self.world.rng
        await self._killed(what, commands)
        await self.process.enter(what)
        cut = len(commands) + 1
        if world.faults.redis_error and rng.random() < world.faults.redis_error / 2:
            cut = rng.randint(0, len(commands))
        for command in commands[:cut]:
            command()
        if cut <= len(commands):
            world.note(f"{self.process.name} {what} cut after {cut} of {len(commands)}")
            raise RedisConnectionError("sim: pipeline cut")
        world.note(f"{self.process.name} {what}")
        await self.process.leave(what)

    async def _killed(self, what: str, commands: Sequence[Callable[[], None]]) -> None:
        """A kill -9 at this call (:data:`CRASH_P`): the commands before it ran."""
        ran = self._crash(what, len(commands))
        if ran is not None:
            for command in commands[:ran]:
                command()
            await self.process.gate()  # killed: never returns

    async def load(self) -> dict[str, int] | None:
        await self.process.enter("HSCAN poll:digests")
        table = self.redis.hashes.get(self.name)
        digests = None
        if table:
            digests = {
                key.decode(): int.from_bytes(value, "big") if len(value) == DIGEST_BYTES else -1
                for key, value in table.items()
            }
        await self.process.leave("HSCAN poll:digests")
        return digests

    async def invalidate(self, keys: Sequence[str]) -> None:
        commands: list[Callable[[], None]] = [
            lambda k=key: self._set(k, b"")  # type: ignore[misc]
            for key in keys
        ]
        what = f"HSET being written {sorted(keys)}"
        fenced: list[bool] = []
        await self._commands(what, [lambda: self._fenced_run(commands, fenced)])
        if fenced:
            self.world.note(f"{self.process.name} {what} fenced")
            raise ProducerFenced("sim: the producer lease is not ours: keys not marked")

    def _remembering(
        self, digests: Mapping[str, int], forget: Sequence[str]
    ) -> list[Callable[[], None]]:
        commands: list[Callable[[], None]] = [
            lambda k=key, d=digest: self._set(k, d.to_bytes(DIGEST_BYTES, "big"))  # type: ignore[misc]
            for key, digest in digests.items()
        ]
        commands += [lambda k=key: self._set(k, None) for key in forget]  # type: ignore[misc]
        return commands

    async def remember(self, digests: Mapping[str, int], forget: Sequence[str]) -> None:
        what = f"HSET digests {sorted(digests)} HDEL {sorted(forget)}"
        fenced: list[bool] = []
        # one script: the lease checked, then every HSET and HDEL (a cut loses it whole
        # or its reply)
        commands = self._remembering(digests, forget)
        await self._commands(what, [lambda: self._fenced_run(commands, fenced)])
        if fenced:
            self.world.note(f"{self.process.name} {what} fenced")
            raise ProducerFenced("sim: the producer lease is not ours: digests not stored")

    def _fenced_run(self, commands: Sequence[Callable[[], None]], fenced: list[bool]) -> None:
        if self._fenced():
            fenced.append(True)
            return
        for command in commands:
            command()

    async def remember_at_once(self, digests: Mapping[str, int], forget: Sequence[str]) -> None:
        what = f"MULTI HSET digests {sorted(digests)} HDEL {sorted(forget)} EXEC"
        commands = self._remembering(digests, forget)
        ran = self._crash(what, 1)  # killed before EXEC ran (none applied) or after (all)
        if ran is not None:
            for command in commands[: len(commands) * ran]:
                command()
            await self.process.gate()  # killed: never returns
        await self.process.enter(what)  # may fail before it ran: none applied
        if self._fenced():
            self.world.note(f"{self.process.name} {what} fenced")
            raise ProducerFenced("sim: the producer lease is not ours: digests not stored")
        for command in commands:
            command()
        self.world.note(f"{self.process.name} {what}")
        await self.process.leave(what)  # may lose the reply: all applied

    async def forget_all(self) -> None:
        await self._commands("UNLINK poll:digests", [self._unlink])

    def _unlink(self) -> None:
        self.redis.hashes.pop(self.name, None)


class PollLedger:
    """Every change written to a stream, per key, and the polled-checkpoint check."""

    def __init__(
        self, world: World, mz: SimMaterialize, restart: Callable[[], None] = lambda: None
    ) -> None:
        self.world = world
        self.mz = mz
        # the supervisor: starts a producer when one was killed at a call (CRASH_P)
        self.restart = restart
        self.crashes_left = CRASHES
        # key -> (ts, document or None) of every change written, in the order written
        self.writes: dict[bytes, list[tuple[int, bytes | None]]] = {}

    def record(self, fields: Mapping[bytes, bytes]) -> None:
        try:
            decoded, _ = decode_entry_parts(fields)
        except EntryError:
            return
        if isinstance(decoded, Marker):
            return
        for change in decoded:
            self.writes.setdefault(change.key, []).append((change.ts, change.doc))

    def latest(self, key: bytes, at_most: int) -> tuple[int, bytes | None] | None:
        """The change of ``key`` with the highest ts at or below ``at_most`` (of equal
        ones the last written: external_gte lets it win), None if none."""
        found: tuple[int, bytes | None] | None = None
        for ts, doc in self.writes.get(key, ()):
            if ts <= at_most and (found is None or ts >= found[0]):
                found = (ts, doc)
        return found

    def check_poll(self, frontier: int) -> None:
        """A polling producer moves the checkpoint to ``frontier`` = V + 1: every key's
        latest change at or below V matches the view at V, or (a key gone) is older
        than a reconcile marker at or below V, which deletes it. Then every change of
        the history below ``frontier`` counts as in the streams, for the SUBSCRIBE
        check (tests.sim.producer.SimEntrySink.check_checkpoint) of later commits."""
        version = frontier - 1
        view = {key.encode(): values for key, values in self.mz.state_at(version).items()}
        checker = self.world.checker
        markers = [int(ts) for ts in self.world.redis.hashes.get(self.world.keys.reconcile, {})]
        for key in sorted(view.keys() | self.writes.keys()):
            latest = self.latest(key, version)
            want = view.get(key)
            if want is None:  # gone: deleted, or older than a marker that deletes it
                bad = latest is not None and latest[1] is not None
                bad = bad and not any(latest[0] < m <= version for m in markers if latest)
            else:
                bad = latest is None or latest[1] != _ENCODER.encode(want, latest[0])
            if bad:
                checker.key = key
                checker.fail(
                    f"polled checkpoint moved to {frontier} but the latest change of "
                    f"{key.decode()} in the streams at or below {version} is {latest!r}, "
                    f"the view at {version} has {want!r}"
                )
        checker.in_streams.update((key.encode(), ts) for ts, key in self.mz.changes_below(frontier))


class _SimPollSink(SimEntrySink):
    """The entry sink of a producer in a polling schedule: records what it writes in the
    ledger and checks its checkpoint moves as its mode requires."""

    ledger: PollLedger
    polling: bool
    crash: CrashPoint = staticmethod(_no_crash)

    async def _pipeline(self, what: str, commands: list[Callable[[], object]]) -> list[object]:
        ran = self.crash(what, len(commands))
        if ran is not None:  # kill -9 at this round trip: the commands before it ran
            for command in commands[:ran]:
                command()
            await self.process.gate()  # killed: never returns
        return await super()._pipeline(what, commands)

    def _xadd(self, partition: int, fields: dict[bytes, bytes]) -> bytes:
        entry_id = super()._xadd(partition, fields)
        self.ledger.record(fields)
        return entry_id

    async def mark_reconcile(self, ts: int) -> None:
        # a full poll's marker: the poll read the view and wrote it at ts, a snapshot
        # (tests.sim.invariants checks the reconcile against the snapshots read)
        snapshots: list[int] | None = getattr(self.world.checker, "snapshots", None)
        if snapshots is not None:
            snapshots.append(ts)
        await super().mark_reconcile(ts)

    def check_checkpoint(self, frontier: int) -> None:
        if self.polling:
            self.ledger.check_poll(frontier)
        else:
            super().check_checkpoint(frontier)


class SimModalProducer(SimProducer):
    """producer.service's session loop in either mode (module docstring)."""

    def __init__(
        self,
        world: World,
        name: str,
        mz: SimMaterialize,
        ledger: PollLedger,
        *,
        polling: bool,
    ) -> None:
        super().__init__(world, name, mz)
        # set before the loop runs the task SimProducer.__init__ created
        self.polling = polling
        self._poller_class = Poller
        self.poll_settings: Settings = msgspec.structs.replace(
            world.settings, use_subscribe=False, poll_interval=POLL_INTERVAL_S
        )
        sink = _SimPollSink(
            world,
            self.process,
            progress_interval_ms=world.settings.progress_interval_ms,
            lease=lambda: self.lease.value,
            mz=mz,
        )
        sink.ledger, sink.polling = ledger, polling
        self.ledger = ledger
        if polling:
            sink.crash = self.crash_point
        self.writer = sink  # type: ignore[assignment]
        world.note(f"{name} mode: {'polling' if polling else 'SUBSCRIBE'}")

    def use(self, session: type[SubscribeSession], poller: type[Poller]) -> None:
        """The session and poller classes (a planted bug); before the loop runs it."""
        self._session_class = session
        self._poller_class = poller

    def crash_point(self, what: str, commands: int) -> int | None:
        """Whether the process is killed at this call (:data:`CRASH_P`, at most
        :data:`CRASHES` a schedule), and how many of its commands ran first; the
        supervisor (the schedule) starts another producer."""
        ledger, rng = self.ledger, self.world.rng
        if not commands or not ledger.crashes_left or self.crashed or rng.random() >= CRASH_P:
            return None
        ledger.crashes_left -= 1
        ran = rng.randint(0, commands)
        self.world.note(f"{self.process.name} killed at {what} after {ran} of {commands}")
        self.crash()
        ledger.restart()
        return ran

    async def _attempt(self, halt: asyncio.Event) -> None:
        """producer.service._Producer._attempt with the simulated ports."""
        crash = self.crash_point if self.polling else _no_crash
        digests = SimDigestStore(self.world, self.process, crash, self.lease.value)
        if not self.polling:
            # as producer.service does: SUBSCRIBE keeps no digests and drops them
            await digests.forget_all()
            await super()._attempt(halt)
            return
        self.world.note(f"{self.process.name} start plan: polling")
        self.world.sessions += 1
        poller = self._poller_class(
            self.poll_settings, self.writer, self.monitor, halt, open_source=self._open_poll,
            digests=digests, on_streaming=self.backoff.reset,
        )  # fmt: skip
        self.session = poller
        await poller.run()

    async def _open_poll(self, settings: Settings) -> SimPollSource:
        await self.process.gate()
        if self.world.faults.mz_error and self.world.rng.random() < self.world.faults.mz_error:
            raise psycopg.OperationalError("sim: connection to Materialize refused")
        return SimPollSource(self.mz, self.process)


def producer_mode(seed: int, number: int) -> bool:
    """Whether producer ``number`` of schedule ``seed`` polls: the first always, the
    others at random (from their own generator: the schedule's draws stay the same)."""
    return number == 0 or random.Random(seed * 7919 + number).random() < 0.5


def settle_polling(world: World, mz: SimMaterialize) -> dict[bytes, bytes]:
    """At rest: the reconciles run (module docstring); returns the view as the index
    should hold it, each document at the version the index holds for its key."""
    markers = world.redis.hashes.get(world.keys.reconcile, {})
    pending = [int(ts) for ts, state in markers.items() if state == RECONCILE_PENDING]
    if pending:
        below = max(pending)
        for name, doc in list(world.index.docs.items()):
            if doc.source is not None and doc.version < below:
                world.note(f"reconcile {below}: delete {name.decode()}@{doc.version}")
                del world.index.docs[name]
    view: dict[bytes, bytes] = {}
    for key, values in mz.rows.items():
        stored = world.index.docs.get(key.encode())
        version = stored.version if stored is not None else mz.last_change[key]
        view[key.encode()] = _ENCODER.encode(values, version)
    return view
