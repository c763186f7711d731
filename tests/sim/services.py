"""The simulated services as one consumer process sees them (consumer.ports).

Each consumer process has a :class:`SimProcess`: while it is paused (a GC pause,
SIGSTOP, a slow host) none of its calls start or return. Every call passes the
faults in force (tests.sim.world.Faults): slow on the way in and out, a Redis
connection error before the command ran or after it ran (the reply lost), a
pipeline cut between two of its commands, a bulk that fails as a whole before or
after OpenSearch applied it, items answered 429 or 500, OpenSearch down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence

from redis.exceptions import ConnectionError as RedisConnectionError

from searchsync.common.entries import Change, DeadLetter, encode_dead_letter
from searchsync.common.keys import SNAPSHOT_FLOOR_MEMBER
from searchsync.consumer.attempts import MARKER_SUFFIX, marker
from searchsync.consumer.batch import RawEntry
from searchsync.consumer.bulk import ItemResult
from searchsync.consumer.highwater import HIGH_WATER_MEMBER, bound_from
from searchsync.consumer.leases import hold_seconds
from searchsync.consumer.reader import READ_BLOCK_MS
from searchsync.consumer.sender import BulkFailed

from .invariants import Violation
from .world import World

__all__ = ["BULK_S", "ROUND_TRIP_S", "SimLeases", "SimProcess", "SimSink", "SimStreamStore"]

# The longest a healthy Redis round trip and a healthy bulk take, in virtual seconds.
ROUND_TRIP_S = 0.002
BULK_S = 0.05


class SimProcess:
    """One consumer process: its name and whether it is paused."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name
        self.paused_until = 0.0
        # a pause that starts right before the next XREADGROUP (see SimStreamStore.read_new)
        self.stall_next_read = 0.0
        # every call of this process runs and loses its answer (the contract suite's
        # connection cut after the command reached the server)
        self.lossy = False

    async def gate(self) -> None:
        """Wait while the process is paused."""
        loop = self.world.loop
        # paused_until may move while asleep (another pause): look again after each wait
        while loop.now < self.paused_until:  # noqa: ASYNC110
            await asyncio.sleep(self.paused_until - loop.now)

    async def enter(self, what: str) -> None:
        """Before a Redis command: paused, slow, or failing before it ran."""
        await self.gate()
        faults, rng = self.world.faults, self.world.rng
        # a round trip takes time even when all is well: other processes run meanwhile
        await asyncio.sleep(rng.uniform(0, ROUND_TRIP_S))
        if faults.slow and rng.random() < faults.slow:
            await asyncio.sleep(rng.uniform(0, faults.slow_max))
        if faults.redis_error and rng.random() < faults.redis_error / 2:
            self.world.note(f"{self.name} {what}: connection error, not run")
            raise RedisConnectionError(f"sim: {what} not run")

    async def leave(self, what: str) -> None:
        """After a Redis command ran: the reply lost, or slow, or paused before it is used."""
        faults, rng = self.world.faults, self.world.rng
        if self.lossy or (faults.redis_error and rng.random() < faults.redis_error / 2):
            self.world.note(f"{self.name} {what}: connection error after it ran")
            raise RedisConnectionError(f"sim: {what} ran, reply lost")
        if faults.slow and rng.random() < faults.slow:
            await asyncio.sleep(rng.uniform(0, faults.slow_max))
        await self.gate()


def _raw(entries: Sequence[tuple[bytes, dict[bytes, bytes]]], counts: list[int]) -> list[RawEntry]:
    return [RawEntry(i, f, c) for (i, f), c in zip(entries, counts, strict=True)]


class SimStreamStore:
    """consumer.ports.StreamStore on tests.sim.streams.RedisModel, for consumer ``me``."""

    def __init__(self, world: World, process: SimProcess) -> None:
        self.world = world
        self.redis = world.redis
        self.keys = world.keys
        self.process = process
        self.me = process.name
        self.ttl_ms = max(int(hold_seconds(world.settings.lease_ttl_seconds) * 1000), 1)

    def _attempts(self, partition: int, ids: Sequence[bytes]) -> list[int]:
        table = self.redis.hash(self.keys.attempts(partition))
        return [max(int(table.get(i, b"0")), 0) for i in ids]

    async def read_new(self, partition: int, count: int, *, block: bool) -> list[RawEntry]:
        stream = self.keys.stream(partition)
        process = self.process
        if process.stall_next_read:
            # stopped between its last lease check and this read: once it goes on, it
            # reads what the partition's next owner has not read yet (a stray)
            loop = self.world.loop
            process.paused_until = max(process.paused_until, loop.now + process.stall_next_read)
            self.world.note(f"{self.me} stalls before XREADGROUP p{partition}")
            process.stall_next_read = 0.0
        await process.enter(f"XREADGROUP p{partition}")
        found = self.redis.xreadgroup(stream, self.me, count)
        if not found and block:
            # BLOCK: returns as soon as an entry arrives, else after READ_BLOCK_MS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.world.data_event(stream).wait(), READ_BLOCK_MS / 1000)
            found = self.redis.xreadgroup(stream, self.me, count)
        if found:
            self.world.note(f"{self.me} read p{partition} {_ids(found)}")
        await self.process.leave("XREADGROUP")
        return [RawEntry(i, f, 0) for i, f in found]

    async def claim_pending(
        self, partition: int, count: int, cursor: bytes
    ) -> tuple[bytes, list[RawEntry]]:
        await self.process.enter(f"XAUTOCLAIM p{partition}")
        stream = self.keys.stream(partition)
        next_cursor, found = self.redis.xautoclaim(stream, self.me, cursor, count)
        self.world.note(f"{self.me} autoclaim p{partition} {_ids(found)} next {next_cursor!r}")
        await self.process.leave("XAUTOCLAIM")
        if not found:
            return next_cursor, []
        await self.process.enter("HMGET attempts")
        counts = self._attempts(partition, [i for i, _ in found])
        await self.process.leave("HMGET attempts")
        return next_cursor, _raw(found, counts)

    async def claim_ids(self, partition: int, ids: Sequence[bytes]) -> list[RawEntry]:
        if not ids:
            return []
        await self.process.enter(f"XCLAIM p{partition}")
        found = self.redis.xclaim(self.keys.stream(partition), self.me, ids)
        self.world.note(f"{self.me} claim p{partition} {_ids(found)}")
        await self.process.leave("XCLAIM")
        if not found:
            return []
        await self.process.enter("HMGET attempts")
        counts = self._attempts(partition, [i for i, _ in found])
        await self.process.leave("HMGET attempts")
        return _raw(found, counts)

    async def pending_count(self, partition: int) -> int:
        await self.process.enter("XPENDING")
        count = self.redis.xpending_count(self.keys.stream(partition))
        await self.process.leave("XPENDING")
        return count

    async def pending_below(self, partition: int, entry_id: bytes, count: int) -> list[bytes]:
        await self.process.enter("XPENDING range")
        ids = self.redis.xpending_below(self.keys.stream(partition), entry_id, count)
        await self.process.leave("XPENDING range")
        return ids

    async def settle(
        self,
        partition: int,
        entry_ids: Sequence[bytes],
        changes: int,
        letters: Sequence[DeadLetter] = (),
        *,
        sent: Sequence[bytes] = (),
        charged: Sequence[bytes] = (),
        check_below: bytes | None = None,
        check_count: int = 1,
        floor: int | None = None,
    ) -> list[bytes]:
        if not entry_ids and not letters and not sent and check_below is None:
            return []
        await self.process.enter(f"settle p{partition}")
        world, keys, redis = self.world, self.keys, self.redis
        stream = keys.stream(partition)
        attempts = redis.hash(keys.attempts(partition))
        commands: list[Callable[[], object]] = []
        for letter in letters:
            commands.append(functools.partial(self._letter, letter))
        if floor is not None:
            commands.append(functools.partial(self._raise_floor, partition, floor))
        if entry_ids:
            commands.append(lambda: self._ack(partition, entry_ids))
        if changes:
            commands.append(
                lambda: redis.hincrby(keys.counts(partition), keys.acked_field(partition), changes)
            )
        # consumer.attempts.queue_answered, command by command
        done = set(entry_ids)
        markers = [marker(i) for i in dict.fromkeys(sent) if i not in done]
        if markers:
            commands.append(lambda: [attempts.pop(m, None) for m in markers])
        for entry_id in dict.fromkeys(charged):
            if entry_id not in done:
                commands.append(
                    functools.partial(redis.hincrby, keys.attempts(partition), entry_id, 1)
                )
        if entry_ids:
            commands.append(
                lambda: [attempts.pop(f, None) for i in entry_ids for f in (i, marker(i))]
            )
        faults = world.faults
        cut = len(commands) + 1
        if faults.redis_error and world.rng.random() < faults.redis_error / 2:
            cut = world.rng.randint(0, len(commands))
        for command in commands[:cut]:
            command()
        if cut <= len(commands):
            world.note(f"{self.me} settle p{partition} cut after {cut} of {len(commands)}")
            raise RedisConnectionError("sim: pipeline cut")
        strays: list[bytes] = []
        if check_below is not None:
            strays = redis.xpending_below(stream, check_below, check_count)
        await self.process.leave("settle")
        return strays

    def _letter(self, letter: DeadLetter) -> None:
        self.redis.xadd(self.keys.dlq, encode_dead_letter(letter))
        self.world.checker.on_letter(letter)
        self.world.note(f"{self.me} dead letter {letter.source} {letter.key!r}: {letter.reason}")

    def _raise_floor(self, partition: int, floor: int) -> None:
        # ZADD GT: never lowered
        members = self.redis.zset(self.keys.snapshot_floor(partition))
        member = SNAPSHOT_FLOOR_MEMBER.decode()
        if member not in members or floor > members[member]:
            members[member] = float(floor)
            self.world.note(f"{self.me} floor p{partition} = {floor}")

    async def snapshot_floor(self, partition: int) -> int | None:
        # paused like any call, but no faults and no latency: they would draw from the
        # world's generator, and every seed found before the floor existed (334 among
        # them) would run another schedule; a failed read is the takeover's
        # recover_attempts failing, which the schedules cover
        await self.process.gate()
        score = self.redis.zset(self.keys.snapshot_floor(partition)).get(
            SNAPSHOT_FLOOR_MEMBER.decode()
        )
        await self.process.gate()
        return int(score) if score is not None else None

    def _ack(self, partition: int, ids: Sequence[bytes]) -> None:
        self.redis.xack(self.keys.stream(partition), ids)
        self.world.note(f"{self.me} XACK p{partition} {b','.join(ids).decode()}")
        self.world.checker.on_ack(partition, ids)

    async def advance(self, partition: int, applied_ts: int) -> None:
        await self.process.enter("advance")
        key = self.keys.applied(partition)
        current = self.redis.get(key)
        if current is None or int(current) < applied_ts:
            self.redis.strings[key] = (str(applied_ts), None)
            self.world.note(f"{self.me} applied p{partition} = {applied_ts}")
            self.world.checker.on_advance(partition, applied_ts)
        await self.process.leave("advance")

    async def fence(self, partition: int, token: str, entry_ids: Iterable[bytes] = ()) -> bool:
        await self.process.enter("fence")
        lease = self.keys.lease(partition)
        held = self.redis.get(lease) == self.me
        if held:
            self.redis.pexpire(lease, self.ttl_ms)
            attempts = self.redis.hash(self.keys.attempts(partition))
            for entry_id in entry_ids:
                attempts[marker(entry_id)] = token.encode()
        else:
            self.world.note(f"{self.me} fenced off p{partition}")
        await self.process.leave("fence")
        return held

    async def recover_attempts(self, partition: int, token: str) -> int:
        await self.process.enter("recover attempts")
        attempts = self.redis.hash(self.keys.attempts(partition))
        counted = 0
        for name in [f for f in attempts if f.endswith(MARKER_SUFFIX)]:
            if attempts[name] != token.encode():
                base = name[: -len(MARKER_SUFFIX)]
                attempts[base] = str(int(attempts.get(base, b"0")) + 1).encode()
                counted += 1
            del attempts[name]
        await self.process.leave("recover attempts")
        return counted

    async def ts_bound(self, highest_ts: int) -> int:
        await self.process.enter("ZSCORE high_water")
        mark = self.redis.zset(self.keys.high_water).get(HIGH_WATER_MEMBER.decode())
        await self.process.leave("ZSCORE high_water")
        return bound_from(int(mark) if mark is not None else None, self.world.now_ms())

    async def set_blocked(self, partition: int, state: str, ttl_ms: int) -> None:
        await self.process.enter("SET blocked")
        self.redis.set_px(self.keys.blocked(partition), state, ttl_ms)
        await self.process.leave("SET blocked")

    async def clear_blocked(self, partition: int) -> None:
        await self.process.enter("DEL blocked")
        self.redis.delete(self.keys.blocked(partition))
        await self.process.leave("DEL blocked")


class SimLeases:
    """consumer.ports.LeaseStore on the model, as consumer.leases.Leases does it."""

    def __init__(self, world: World, process: SimProcess) -> None:
        self.world = world
        self.redis = world.redis
        self.keys = world.keys
        self.process = process
        self.me = process.name
        self.ttl_ms = max(int(hold_seconds(world.settings.lease_ttl_seconds) * 1000), 1)
        self._valid_until: dict[int, float] = {}

    def _mark(self, partition: int, started: float) -> None:
        self._valid_until[partition] = started + self.ttl_ms / 1000

    async def heartbeat(self) -> tuple[int, dict[str, float]]:
        await self.process.enter("heartbeat")
        now = self.world.now_ms()
        members = self.redis.zset(self.keys.members)
        members[self.me] = float(now)
        for name in [n for n, beat in members.items() if beat < now - self.ttl_ms]:
            del members[name]
        beats = dict(members)
        await self.process.leave("heartbeat")
        return now, beats

    async def acquire(self, partition: int) -> bool:
        started = self.world.loop.now
        await self.process.enter("acquire")
        lease = self.keys.lease(partition)
        holder = self.redis.get(lease)
        got = holder is None or holder == self.me
        if holder is None:
            self.redis.set_px(lease, self.me, self.ttl_ms)
        elif got:
            self.redis.pexpire(lease, self.ttl_ms)
        if got:
            self.world.note(f"{self.me} holds lease p{partition}")
        await self.process.leave("acquire")
        if got:
            self._mark(partition, started)
        return got

    async def renew(self, partitions: Iterable[int]) -> set[int]:
        parts = list(partitions)
        if not parts:
            return set()
        started = self.world.loop.now
        await self.process.enter("renew")
        held = set()
        for partition in parts:
            lease = self.keys.lease(partition)
            if self.redis.get(lease) == self.me:
                self.redis.pexpire(lease, self.ttl_ms)
                held.add(partition)
        await self.process.leave("renew")
        for partition in parts:
            if partition in held:
                self._mark(partition, started)
            else:
                self._valid_until.pop(partition, None)
        return held

    def expired(self, partition: int, now: float | None = None) -> bool:
        deadline = self._valid_until.get(partition)
        return deadline is None or (self.world.loop.now if now is None else now) >= deadline

    async def release(self, partition: int) -> None:
        self._valid_until.pop(partition, None)
        await self.process.enter("release")
        if self.redis.get(self.keys.lease(partition)) == self.me:
            self.redis.delete(self.keys.lease(partition))
            self.world.note(f"{self.me} released p{partition}")
        await self.process.leave("release")

    async def leave(self, partitions: Iterable[int]) -> None:
        await self.process.enter("leave")
        for partition in partitions:
            self._valid_until.pop(partition, None)
            if self.redis.get(self.keys.lease(partition)) == self.me:
                self.redis.delete(self.keys.lease(partition))
        self.redis.zset(self.keys.members).pop(self.me, None)
        self.world.note(f"{self.me} left")
        await self.process.leave("leave")


class SimSink:
    """consumer.ports.IndexSink on tests.sim.index.IndexModel."""

    def __init__(self, world: World, process: SimProcess) -> None:
        self.world = world
        self.process = process

    async def send(self, changes: Sequence[Change]) -> Sequence[ItemResult]:
        world, process = self.world, self.process
        faults, rng = world.faults, world.rng
        await process.gate()
        await asyncio.sleep(rng.uniform(0, BULK_S))
        if faults.slow and rng.random() < faults.slow:
            await asyncio.sleep(rng.uniform(0, faults.slow_max))
        if world.hold_next_bulk:
            await self._held(changes)
        if faults.os_down:
            world.note(f"{process.name} bulk of {len(changes)}: OpenSearch down")
            raise BulkFailed(None, "connection error: sim: OpenSearch down")
        lost = process.lossy
        if faults.bulk_error and rng.random() < faults.bulk_error:
            kind = rng.choice(("throttled", "lost"))
            if kind == "throttled":
                world.note(f"{process.name} bulk of {len(changes)}: 429")
                raise BulkFailed(429, "429 es_rejected_execution_exception")
            lost = True
        results: list[ItemResult] = []
        for change in changes:
            if faults.throttle and rng.random() < faults.throttle:
                results.append(ItemResult(429, "es_rejected_execution_exception", "queue full"))
                continue
            if faults.item_fail and rng.random() < faults.item_fail:
                results.append(ItemResult(500, "internal_server_error", "sim"))
                continue
            result = world.index.write(change)
            accepted = result.status < 300 or result.status == 404
            world.checker.on_write(change.key, change.ts, accepted)
            results.append(result)
        world.note(
            f"{process.name} bulk "
            + " ".join(
                f"{c.key.decode()}@{c.ts}:{r.status}" for c, r in zip(changes, results, strict=True)
            )
        )
        if faults.slow and rng.random() < faults.slow:
            await asyncio.sleep(rng.uniform(0, faults.slow_max))
        await process.gate()
        if lost:
            world.note(f"{process.name} bulk answer lost (applied)")
            raise BulkFailed(None, "timeout")
        return results

    async def _held(self, changes: Sequence[Change]) -> None:
        """The request is held up on the way (a proxy, a full queue): the client gives up
        after OS_TIMEOUT_SECONDS, OpenSearch applies it when it gets there."""
        world, delay = self.world, self.world.hold_next_bulk
        world.hold_next_bulk = 0.0
        world.ghosts += 1
        carried = " ".join(f"{c.key.decode()}@{c.ts}" for c in changes)
        world.note(f"{self.process.name} bulk {carried} held up on the way {delay:.1f}s")

        def land() -> None:
            world.ghosts -= 1
            answered = []
            with contextlib.suppress(Violation):
                for change in changes:
                    result = world.index.write(change)
                    answered.append(f"{change.key.decode()}@{change.ts}:{result.status}")
                    accepted = result.status < 300 or result.status == 404
                    world.checker.on_write(change.key, change.ts, accepted)
            world.note("held-up bulk lands: " + " ".join(answered))

        world.loop.call_later(delay, land)
        await asyncio.sleep(world.settings.os_timeout_seconds)
        raise BulkFailed(None, "timeout")

    async def answers(self) -> bool:
        await self.process.gate()
        return not self.world.faults.os_down


def _ids(found: Sequence[tuple[bytes, object]]) -> str:
    return ",".join(i.decode() for i, _ in found) or "-"
