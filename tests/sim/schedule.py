"""One seeded schedule: a change history, a producer writing it, consumers under chaos.

:func:`run_schedule` builds everything from ``seed`` alone and runs it on a fresh
virtual-time loop. The producer here writes entries the way producer.writer
lays them out (the high-water mark raised first, ``u``/``d``/``b`` entries per
partition by ``common.partition``, then progress entries ``p`` at ts + 1 in every
partition); it is a model of the producer, not its code. Consumers join, leave,
crash, restart under their name and pause; Redis and OpenSearch fail and slow
down in bursts; acknowledged entries are trimmed. Then the faults stop and the
schedule waits for quiescence and checks the index against the view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from searchsync.common.config import Settings
from searchsync.common.entries import encode_changes, encode_progress
from searchsync.common.partition import partition_of
from searchsync.consumer.highwater import HIGH_WATER_MEMBER
from searchsync.consumer.retention import trim_floor
from searchsync.consumer.runner import PartitionRunner

from .consumer import SimConsumer
from .index import POISON_DOC
from .invariants import Violation
from .loop import VirtualLoop
from .plants import PLANTS
from .world import Faults, World

__all__ = ["Outcome", "run_schedule", "shrink"]

# Virtual seconds the schedule may take to come to rest once the faults stop.
REST_DEADLINE_S = 120.0
SIM_SETTINGS = dict(
    lease_ttl_seconds=1.0,
    max_batch_size=6,
    max_batch_age_seconds=0.3,
    retry_initial_backoff=0.05,
    retry_max_backoff=1.0,
    max_deliveries=12,
)


@dataclass(slots=True)
class Outcome:
    seed: int
    violation: str | None
    trace: list[str]
    events: list[str]
    digest: str
    steps: int
    virtual_seconds: float
    unexpected: list[str] = field(default_factory=list)
    # the steps that name the key of the violation (when it is about one key)
    about_key: list[str] = field(default_factory=list)
    chaos_events: int = 0  # how many chaos events the seed's schedule has (before --drop)
    replay: str = ""  # the command that replays this outcome

    @property
    def ok(self) -> bool:
        return self.violation is None and not self.unexpected

    def report(self) -> str:
        lines = [f"seed {self.seed}: {self.violation or 'unexpected errors'}"]
        lines += [f"  schedule: {e}" for e in self.events]
        lines += [f"  unexpected: {u}" for u in self.unexpected]
        if self.about_key:
            lines.append(f"  the {len(self.about_key)} steps that name its key:")
            lines += [f"    {t}" for t in self.about_key]
        lines.append(f"  last {len(self.trace)} of {self.steps} steps:")
        lines += [f"    {t}" for t in self.trace]
        lines.append(f"  replay: {self.replay}")
        return "\n".join(lines)


class _Unexpected(logging.Handler):
    """Collects ERROR records with a traceback (a runner's ``log.exception``): in a
    simulation that is a bug in a model or in the code, never a planned fault."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and not isinstance(record.exc_info[1], Violation):
            self.found.append(f"{record.getMessage()}: {record.exc_info[1]!r}")


_HANDLER = _Unexpected()
_LOG = logging.getLogger("searchsync")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """The product's log lines quieted (errors collected) for one schedule, and the
    logger restored after: pytest runs other tests in the same process that read those
    lines with caplog (a logger left silenced made them fail by test order)."""
    level, propagate = _LOG.level, _LOG.propagate
    _LOG.addHandler(_HANDLER)
    _LOG.setLevel(logging.ERROR)
    _LOG.propagate = False
    try:
        yield
    finally:
        _LOG.removeHandler(_HANDLER)
        _LOG.setLevel(level)
        _LOG.propagate = propagate


@dataclass(slots=True)
class History:
    """The change history: per step, (key, doc or None); the view at the end."""

    steps: list[list[tuple[bytes, bytes | None]]]
    poison_key: bytes | None
    poison_entry_at: int | None  # step after which a malformed entry is written


def _history(rng: random.Random) -> History:
    keys = [f"k{i}".encode() for i in range(rng.randint(2, 10))]
    live: set[bytes] = set()
    steps: list[list[tuple[bytes, bytes | None]]] = []
    for _ in range(rng.randint(3, 14)):
        chosen = rng.sample(keys, rng.randint(1, min(len(keys), 4)))
        step: list[tuple[bytes, bytes | None]] = []
        for key in chosen:
            if key in live and rng.random() < 0.3:
                live.discard(key)
                step.append((key, None))
            else:
                live.add(key)
                step.append((key, b""))  # the document is filled in with the ts
        steps.append(step)
    poison_key = b"poison" if rng.random() < 0.2 else None
    poison_at = rng.randrange(len(steps)) if rng.random() < 0.2 else None
    return History(steps, poison_key, poison_at)


def _chaos(rng: random.Random, span: float, held: bool) -> list[tuple[float, str, float]]:
    """(at, action, amount) events over ``span`` virtual seconds; with ``held``, one bulk
    is held up on the way for longer than the index keeps tombstones (gc_deletes)."""
    actions = (
        "join", "leave", "crash", "restart", "pause", "stall", "redis", "opensearch", "trim",
        "slow",
    )  # fmt: skip
    weights = (3, 1, 2, 1, 3, 3, 2, 2, 1, 2)
    events = []
    for _ in range(rng.randint(0, 10)):
        action = rng.choices(actions, weights)[0]
        events.append((round(rng.uniform(0, span), 3), action, round(rng.uniform(0.1, 3.0), 3)))
    if held:
        events.append((round(rng.uniform(0, span), 3), "hold", round(rng.uniform(61, 90), 3)))
    return sorted(events)


class _Run:
    def __init__(
        self, seed: int, runner: type[PartitionRunner], held: bool, drop: frozenset[int]
    ) -> None:
        rng = random.Random(seed)
        self.seed = seed
        self.runner = runner
        self.partitions = rng.choice((1, 2, 3, 4))
        self.history = _history(rng)
        self.span = len(self.history.steps) * 0.3 + 1
        planned = _chaos(rng, self.span, held)
        self.planned = len(planned)
        # --drop: events left out (a shrunk schedule); the others keep their numbers
        self.chaos = [event for number, event in enumerate(planned) if number not in drop]
        numbers = [number for number in range(len(planned)) if number not in drop]
        self.initial = rng.randint(1, 3)
        self.events: list[str] = [
            f"{self.partitions} partitions, {self.initial} consumers, "
            f"{len(self.history.steps)} timestamps"
            + (", poison document" if self.history.poison_key else "")
            + (", poison entry" if self.history.poison_entry_at is not None else "")
        ] + [
            f"#{number} {at:.3f} {action} {amount}"
            for number, (at, action, amount) in zip(numbers, self.chaos, strict=True)
        ]
        self.consumers: list[SimConsumer] = []
        self.view: dict[bytes, bytes] = {}
        self.last_progress: dict[int, int] = {}
        self._names = 0

    def _join(self, world: World, name: str | None = None) -> None:
        if name is None:
            name = f"c{self._names}"
            self._names += 1
        world.note(f"{name} JOIN")
        self.consumers.append(SimConsumer(world, name, self.runner))

    def _alive(self) -> list[SimConsumer]:
        return [c for c in self.consumers if c.alive and not c.stop.is_set()]

    async def _produce(self, world: World) -> None:
        rng, redis, keys = world.rng, world.redis, world.keys
        ts = 0
        history = self.history
        steps = list(history.steps)
        if history.poison_key is not None:
            steps.insert(rng.randrange(len(steps) + 1), [(history.poison_key, POISON_DOC)])
            world.checker.poison_keys.add(history.poison_key)
        for number, step in enumerate(steps):
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            ts = max(ts + 1, world.now_ms())
            per_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
            for key, planned in step:
                doc = planned
                if planned is not None and planned != POISON_DOC:
                    doc = b'{"key":"%s","ts":%d}' % (key, ts)
                if doc is None:
                    self.view.pop(key, None)
                else:
                    self.view[key] = doc
                per_partition.setdefault(partition_of(key, self.partitions), []).append((key, doc))
            marks = redis.zset(keys.high_water)
            marks[HIGH_WATER_MEMBER.decode()] = max(marks.get(HIGH_WATER_MEMBER.decode(), 0), ts)
            for partition, changes in sorted(per_partition.items()):
                stream = keys.stream(partition)
                for start in range(0, len(changes), 3):
                    entry = encode_changes(ts, changes[start : start + 3])
                    world.note(
                        f"producer p{partition} {redis.xadd(stream, entry).decode()} {entry}"
                    )
                world.wake(stream)
            if number == history.poison_entry_at:
                partition = rng.randrange(self.partitions)
                bad = {b"ts": str(ts).encode(), b"op": b"?"}
                entry_id = redis.xadd(keys.stream(partition), bad).decode()
                world.checker.poison_sources.add(f"p{partition}/{entry_id}")
                world.note(f"producer p{partition} {entry_id} POISON")
                world.wake(keys.stream(partition))
            if rng.random() < 0.5 or number == len(steps) - 1:
                self._progress(world, ts + 1)

    async def _keep_progressing(self, world: World) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._progress(world, world.now_ms(), traced=False)

    def _progress(self, world: World, ts: int, *, traced: bool = True) -> None:
        marks = world.redis.zset(world.keys.high_water)
        marks[HIGH_WATER_MEMBER.decode()] = max(marks.get(HIGH_WATER_MEMBER.decode(), 0), ts)
        for partition in range(self.partitions):
            stream = world.keys.stream(partition)
            world.redis.xadd(stream, encode_progress(ts))
            self.last_progress[partition] = ts
            world.wake(stream)
        if traced:  # the idle producer's once a second would flood the trace's tail
            world.note(f"producer progress {ts}")

    async def _storm(self, world: World) -> None:
        rng = world.rng
        started = world.loop.now
        for at, action, amount in self.chaos:
            await asyncio.sleep(max(0.0, started + at - world.loop.now))
            alive = self._alive()
            if action == "join" and len(alive) < 4:
                self._join(world)
            elif action == "leave" and alive:
                rng.choice(alive).leave()
            elif action == "crash" and alive:
                rng.choice(alive).crash()
            elif action == "restart" and alive:
                victim = rng.choice(alive)
                victim.crash()
                self._join(world, victim.name)  # the same CONSUMER_NAME, a new process
            elif action == "pause" and alive:
                rng.choice(alive).pause(amount)
            elif action == "stall" and alive:
                victim = rng.choice(alive)
                world.note(f"{victim.name} will stall {amount}s before its next read")
                victim.process.stall_next_read = amount
            elif action == "redis":
                self._burst(world, amount, redis_error=rng.uniform(0.02, 0.3))
            elif action == "opensearch":
                kind = rng.choice(("down", "errors"))
                if kind == "down":
                    self._burst(world, amount, os_down=True)
                else:
                    self._burst(
                        world,
                        amount,
                        bulk_error=rng.uniform(0.05, 0.3),
                        throttle=rng.uniform(0, 0.3),
                        item_fail=rng.uniform(0, 0.1),
                    )
            elif action == "slow":
                self._burst(world, amount, slow=rng.uniform(0.1, 0.6), slow_max=amount)
            elif action == "trim":
                self._trim(world)
            elif action == "hold":
                world.hold_next_bulk = amount

    def _burst(self, world: World, seconds: float, **rates: object) -> None:
        faults = Faults(**rates)  # type: ignore[arg-type]
        world.faults = faults
        world.note(f"FAULTS {rates} for {seconds}s")

        def end() -> None:
            if world.faults is faults:
                world.faults = Faults()
                world.note("FAULTS end")

        world.loop.call_later(seconds, end)

    def _trim(self, world: World) -> None:
        """consumer.retention.trim with a retention of 0 s: what the group acknowledged."""
        for partition in range(self.partitions):
            stream = world.redis.stream(world.keys.stream(partition))
            pending = stream.group.pending_ids()
            floor = trim_floor(
                world.now_ms(), 0, stream.group.last_delivered, pending[0] if pending else None
            )
            if floor is not None:
                minid = f"{floor[0]}-{floor[1]}".encode()
                removed = world.redis.xtrim_minid(world.keys.stream(partition), minid)
                world.note(f"trim p{partition} below {minid.decode()}: {removed}")

    def _unrest(self, world: World) -> str:
        """Why the world is not at rest yet ("" when it is)."""
        if world.ghosts:
            return f"{world.ghosts} held-up bulks still on the way"
        applied = world.redis.hash(world.keys.applied)
        for partition in range(self.partitions):
            stream = world.redis.stream(world.keys.stream(partition))
            if stream.group.pending:
                return f"p{partition}: {len(stream.group.pending)} entries pending"
            if stream.order and stream.group.last_delivered < stream.order[-1]:
                return f"p{partition}: entries not delivered"
            got = applied.get(world.keys.partition_name(partition).encode())
            if got is None or int(got) != self.last_progress.get(partition):
                want = self.last_progress.get(partition)
                return f"p{partition}: applied {got!r}, last progress {want}"
        return ""

    async def main(self, world: World) -> None:
        for _ in range(self.initial):
            self._join(world)
        producer = asyncio.create_task(self._produce(world))
        storm = asyncio.create_task(self._storm(world))
        checker = world.checker
        both = asyncio.gather(producer, storm)
        broken = asyncio.create_task(checker.broken.wait())
        await asyncio.wait((both, broken), return_when=asyncio.FIRST_COMPLETED)
        broken.cancel()
        if both.done():
            both.result()
        world.faults = Faults()
        world.hold_next_bulk = 0.0
        for consumer in self.consumers:
            consumer.process.paused_until = 0.0
        world.note("REST: faults off, pauses over")
        if not self._alive():
            self._join(world)
        deadline = world.loop.now + REST_DEADLINE_S
        # a live producer keeps writing progress entries (about one a second): a frontier
        # whose write was lost to a Redis error is written again by the next one
        ticker = asyncio.create_task(self._keep_progressing(world))
        # at rest is a predicate over the models, not an event: look every 50 virtual ms
        while checker.violation is None and (unrest := self._unrest(world)):
            if world.loop.now > deadline:
                checker.violation = (
                    f"not at rest {REST_DEADLINE_S:.0f} s after the faults stopped: {unrest}"
                )
                return
            await asyncio.sleep(0.05)
        ticker.cancel()
        if checker.violation is None:
            with contextlib.suppress(Violation):
                checker.at_rest(self.view, self.last_progress)


def run_schedule(
    seed: int,
    runner: type[PartitionRunner] = PartitionRunner,
    *,
    held: bool = False,
    drop: frozenset[int] = frozenset(),
) -> Outcome:
    """Run schedule ``seed`` to the end (or its first broken invariant); ``held`` adds a
    bulk held up on the way past the index's gc_deletes (see :func:`_chaos`); ``drop``
    leaves those chaos events out (numbers as the report shows them)."""
    _HANDLER.found = []
    random.seed(seed)  # the backoff jitter (common.backoff) draws from the global generator
    loop = VirtualLoop()
    plan = _Run(seed, runner, held, drop)
    settings = Settings(**SIM_SETTINGS, stream_partitions=plan.partitions)  # type: ignore[arg-type]
    world = World(seed, loop, settings, plan.partitions)
    with _quiet_logs():
        try:
            loop.run_until_complete(plan.main(world))
        finally:
            world.finished = True
            _cancel_all(loop)
            loop.close()
    key = world.checker.key
    about = []
    if key is not None:
        pattern = re.compile(rb"\b%s\b" % re.escape(key))
        about = [t for t in world.steps_log if pattern.search(t.encode())][-40:]
    replay = f"python -m tests.sim --seed {seed}"
    plant = next((name for name, planted in PLANTS.items() if planted is runner), None)
    replay += f" --plant {plant}" if plant else ""
    replay += " --held-bulks" if held else ""
    replay += f" --drop {','.join(map(str, sorted(drop)))}" if drop else ""
    return Outcome(
        seed=seed,
        about_key=about,
        chaos_events=plan.planned,
        replay=replay,
        violation=world.checker.violation,
        trace=list(world.trace),
        events=plan.events,
        digest=world.digest(),
        steps=world.steps,
        virtual_seconds=loop.now,
        unexpected=list(_HANDLER.found),
    )


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


Run = Callable[[int], Outcome]


_KINDS = (
    "acknowledged but",
    "applied frontier moved",
    "indexed version",
    "not at rest",
    "index differs",
    "dead-lettered",
    "still pending",
    "never delivered",
)


def _kind(outcome: Outcome) -> str:
    text = outcome.violation or "unexpected errors"
    return next((kind for kind in _KINDS if kind in text), text)


def shrink(
    seed: int, runner: type[PartitionRunner] = PartitionRunner, *, held: bool = False
) -> Outcome:
    """The failing schedule ``seed`` with as few chaos events as still break the same
    invariant: each event is left out in turn and stays out if the failure remains
    (one run per event). Leaving one out also moves the seeded draws after it, so the
    result is a schedule that fails, not a proof that each event left is needed."""
    best = run_schedule(seed, runner, held=held)
    if best.ok:
        return best
    kind, dropped = _kind(best), frozenset[int]()
    for number in range(best.chaos_events):
        trial = run_schedule(seed, runner, held=held, drop=dropped | {number})
        if not trial.ok and _kind(trial) == kind:
            dropped, best = dropped | {number}, trial
    return best
