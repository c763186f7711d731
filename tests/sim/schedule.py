"""One seeded schedule: a change history, the producer writing it, consumers under chaos.

:func:`run_schedule` builds everything from ``seed`` alone and runs it on a fresh
virtual-time loop. The view's history is staged into a model of Materialize
(tests.sim.producer.SimMaterialize) and read by the producer's own session and
service code (producer.session, producer.service) through SUBSCRIBE rows of either
envelope, written by a model of producer.writer's Redis commands. Producers crash
(a new one starts and resumes from the checkpoint), pause past their lease (a
standby takes over, the old one's checkpoint is fenced), lose Materialize;
consumers join, leave, crash, restart under their name and pause; Redis and
OpenSearch fail and slow down in bursts; acknowledged entries are trimmed. Then the
faults stop and the schedule waits for quiescence and checks the index against the
view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from searchsync.common.config import Settings
from searchsync.common.keys import RECONCILE_PENDING
from searchsync.consumer.retention import trim_floor
from searchsync.consumer.runner import PartitionRunner
from searchsync.producer.documents import DocumentEncoder
from searchsync.producer.polling import Poller
from searchsync.producer.rows import Envelope
from searchsync.producer.session import SubscribeSession

from .consumer import SimConsumer
from .index import NOT_A_NUMBER, gc_deletes_of
from .invariants import Violation
from .loop import VirtualLoop
from .plants import PLANTS, POLLER_PLANTS, PRODUCER_PLANTS
from .polling import PollLedger, SimModalProducer, producer_mode, settle_polling
from .producer import COLUMNS, SimMaterialize, SimProducer
from .world import PROCESS, Faults, World

__all__ = ["Outcome", "run_schedule", "shrink"]

# Virtual seconds the schedule may take to come to rest once the faults stop.
REST_DEADLINE_S = 120.0
# Materialize's retained history (ms) a schedule draws from (None: never compacted);
# 1,000 is Materialize's default, so a producer away longer (crashed, paused past its
# lease, ended by a long backpressure) is refused its AS OF and writes a snapshot.
RETAIN_MS = (None, None, 1000, 3000)
SIM_SETTINGS = dict(
    lease_ttl_seconds=1.0,
    max_batch_size=6,
    max_batch_age_seconds=0.3,
    retry_initial_backoff=0.05,
    retry_max_backoff=1.0,
    max_deliveries=12,
    progress_interval_ms=1000,
    backpressure_threshold=8,
    backpressure_resume=4,
    # the index's gc_deletes (common.index.index_body): above the longest a bulk is held
    # up on the way (see _chaos), the documented assumption of the consumers' bulks
    stream_retention_seconds=300,
)
# A bulk held up on the way (--held-bulks) lands this long after it was sent: past
# OpenSearch's default gc_deletes (60 s), below the index's (SIM_SETTINGS).
HOLD_S = (61.0, 90.0)


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
    sessions: int = 0  # producer sessions started (the first, and every resume after it)
    # reconciles run after a refused AS OF, and the documents they deleted
    reconciles: int = 0
    reconcile_deletes: int = 0
    # tests.sim.invariants.Checker's tallies of the races its seeds stand for
    covered_late: int = 0
    covered_by_marker: int = 0
    settled_below_marker: int = 0
    fenced_progress: int = 0
    fenced_reconciles: int = 0
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
    is held up on the way for longer than OpenSearch's default gc_deletes (HOLD_S)."""
    actions = (
        "join", "leave", "crash", "restart", "pause", "stall", "redis", "opensearch", "trim",
        "slow", "producer-crash", "producer-pause", "materialize",
    )  # fmt: skip
    weights = (3, 1, 2, 1, 3, 3, 2, 2, 1, 2, 2, 2, 2)
    events = []
    for _ in range(rng.randint(0, 10)):
        action = rng.choices(actions, weights)[0]
        events.append((round(rng.uniform(0, span), 3), action, round(rng.uniform(0.1, 3.0), 3)))
    if held:
        events.append((round(rng.uniform(0, span), 3), "hold", round(rng.uniform(*HOLD_S), 3)))
    return sorted(events)


class _Run:
    def __init__(
        self,
        seed: int,
        runner: type[PartitionRunner],
        held: bool,
        drop: frozenset[int],
        session: type[SubscribeSession] = SubscribeSession,
        *,
        polling: bool = False,
        poller: type[Poller] = Poller,
    ) -> None:
        rng = random.Random(seed)
        self.seed = seed
        self.runner = runner
        self.session = session
        # polling schedules (tests.sim.polling): producers poll or SUBSCRIBE
        self.polling = polling
        self.poller = poller
        self.ledger: PollLedger | None = None
        self.partitions = rng.choice((1, 2, 3, 4))
        self.envelope: Envelope = rng.choice(("diffs", "upsert"))
        self.producers_at_start = rng.randint(1, 2)  # the second: a hot standby
        self.history = _history(rng)
        self.span = len(self.history.steps) * 0.3 + 1
        planned = _chaos(rng, self.span, held)
        self.planned = len(planned)
        # drawn apart from ``rng``, so adding compaction kept the other draws of a seed
        self.retain_ms = random.Random(f"{seed}:retain").choice(RETAIN_MS)
        # --drop: events left out (a shrunk schedule); the others keep their numbers
        self.chaos = [event for number, event in enumerate(planned) if number not in drop]
        numbers = [number for number in range(len(planned)) if number not in drop]
        self.initial = rng.randint(1, 3)
        self.events: list[str] = [
            f"{self.partitions} partitions, {self.initial} consumers, "
            f"{self.producers_at_start} producers, envelope {self.envelope}, "
            f"{len(self.history.steps)} timestamps"
            + (", poison document" if self.history.poison_key else "")
            + (", poison entry" if self.history.poison_entry_at is not None else "")
            + (f", history retained {self.retain_ms} ms" if self.retain_ms else "")
        ] + [
            f"#{number} {at:.3f} {action} {amount}"
            for number, (at, action, amount) in zip(numbers, self.chaos, strict=True)
        ]
        self.consumers: list[SimConsumer] = []
        self.producers: list[SimProducer] = []
        self.mz: SimMaterialize | None = None
        self._names = 0
        self._producer_names = 0

    def _join(self, world: World, name: str | None = None) -> None:
        if name is None:
            name = f"c{self._names}"
            self._names += 1
        world.note(f"{name} JOIN")
        self.consumers.append(SimConsumer(world, name, self.runner))

    def _alive(self) -> list[SimConsumer]:
        return [c for c in self.consumers if c.alive and not c.stop.is_set()]

    def _start_producer(self, world: World) -> None:
        assert self.mz is not None
        name = f"P{self._producer_names}"
        self._producer_names += 1
        world.note(f"{name} START")
        if self.ledger is not None:
            polls = producer_mode(self.seed, self._producer_names - 1)
            modal = SimModalProducer(world, name, self.mz, self.ledger, polling=polls)
            modal.use(self.session, self.poller)
            self.producers.append(modal)
            return
        self.producers.append(SimProducer(world, name, self.mz, self.session))

    def _live_producers(self) -> list[SimProducer]:
        return [p for p in self.producers if p.alive]

    async def _database(self, world: World, mz: SimMaterialize) -> None:
        """The writes to PostgreSQL behind the view: one step of the history at a time."""
        rng, history = world.rng, self.history
        steps = list(history.steps)
        if history.poison_key is not None:
            steps.insert(rng.randrange(len(steps) + 1), [(history.poison_key, b"poison")])
            world.checker.poison_keys.add(history.poison_key)
        for number, step in enumerate(steps):
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            for key, planned in step:
                if planned is None:
                    mz.stage(key.decode(), None)
                    continue
                # polling: few values, so that a key goes back to a row it had
                values = 3 if self.polling else 999
                amount = NOT_A_NUMBER if planned == b"poison" else str(rng.randint(1, values))
                mz.stage(key.decode(), (key.decode(), amount))
            world.note(f"database step {number}: {[k.decode() for k, _ in step]}")
            if number == history.poison_entry_at:
                partition = rng.randrange(self.partitions)
                bad = {b"ts": str(mz.upper).encode(), b"op": b"?"}
                entry_id = world.redis.xadd(world.keys.stream(partition), bad).decode()
                world.checker.poison_sources.add(f"p{partition}/{entry_id}")
                world.note(f"hand-written p{partition} {entry_id} POISON")
                world.wake(world.keys.stream(partition))

    def _view(self, mz: SimMaterialize, world: World) -> dict[bytes, bytes]:
        """The view's documents now, as the producer encodes them (producer.documents),
        at the version of their last change, or of a later snapshot that wrote them."""
        encoder = DocumentEncoder(COLUMNS, ("plain", "plain"))
        checker = world.checker
        view = {}
        for key, values in mz.rows.items():
            name = key.encode()
            version = max(
                (s for s in checker.snapshots if (name, s) in checker.in_streams),
                default=mz.last_change[key],
            )
            view[name] = encoder.encode(values, max(version, mz.last_change[key]))
        return view

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
            elif action == "producer-crash" and (running := self._live_producers()):
                rng.choice(running).crash()
                self._start_producer(world)  # the supervisor starts it again
            elif action == "producer-pause" and (running := self._live_producers()):
                # long enough to lose the lease: a standby (or itself) takes over
                rng.choice(running).pause(amount * 2)
            elif action == "materialize":
                self._burst(world, amount, mz_error=rng.uniform(0.1, 0.5))

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
        mz = self.mz
        assert mz is not None
        if mz.staged:
            return "changes not closed by Materialize yet"
        last = mz.log[-1][0] if mz.log else 0
        checkpoint = world.redis.get(world.keys.checkpoint)
        if checkpoint is None or int(checkpoint) <= last:
            return f"checkpoint {checkpoint} not past the last change ({last})"
        pending = [ts for ts, state in world.redis.hash(world.keys.reconcile).items()
                   if state == RECONCILE_PENDING]  # fmt: skip
        if pending:
            return f"reconcile of {pending[0].decode()} not done"
        holder = world.redis.get(world.keys.producer_lease)
        for producer in self._live_producers():
            if producer.lease.value != holder:
                continue  # a standby's flag is of its last lead
            session = producer.session
            if producer.refused and not getattr(session, "snapshot_written", False):
                return f"{producer.process.name}, refused its AS OF, has not written a snapshot"
        last_progress = world.checker.last_progress
        for partition in range(self.partitions):
            if last_progress.get(partition, 0) <= last:
                return f"p{partition}: no progress entry past the last change ({last})"
            stream = world.redis.stream(world.keys.stream(partition))
            if stream.group.pending:
                return f"p{partition}: {len(stream.group.pending)} entries pending"
            if stream.order and stream.group.last_delivered < stream.order[-1]:
                return f"p{partition}: entries not delivered"
            got = world.redis.get(world.keys.applied(partition))
            if got is None or int(got) != last_progress.get(partition):
                want = last_progress.get(partition)
                return f"p{partition}: applied {got!r}, last progress {want}"
        return ""

    async def main(self, world: World) -> None:
        mz = self.mz = world.mz = SimMaterialize(world, self.envelope, self.retain_ms)
        # a producer ran before: the history starts after its checkpoint (a snapshot and
        # reconcile come only from a resume Materialize refuses)
        world.redis.strings[world.keys.checkpoint] = (str(mz.upper), None)
        if self.polling:
            self.ledger = PollLedger(world, mz, restart=lambda: self._start_producer(world))
        ticking = asyncio.create_task(mz.run())
        for _ in range(self.initial):
            self._join(world)
        for _ in range(self.producers_at_start):
            self._start_producer(world)
        database = asyncio.create_task(self._database(world, mz))
        storm = asyncio.create_task(self._storm(world))
        checker = world.checker
        both = asyncio.gather(database, storm)
        both.add_done_callback(_retrieve)  # cancelled at a violation: nothing to report
        broken = asyncio.create_task(checker.broken.wait())
        await asyncio.wait((both, broken), return_when=asyncio.FIRST_COMPLETED)
        broken.cancel()
        if both.done():
            both.result()
        world.faults = Faults()
        world.hold_next_bulk = 0.0
        for process in [c.process for c in self.consumers] + [
            p.process for p in self._live_producers()
        ]:
            process.paused_until = 0.0
        world.note("REST: faults off, pauses over")
        if not self._alive():
            self._join(world)
        if not self._live_producers():
            self._start_producer(world)
        deadline = world.loop.now + REST_DEADLINE_S
        # at rest is a predicate over the models, not an event: look every 50 virtual ms
        while checker.violation is None and (unrest := self._unrest(world)):
            if world.loop.now > deadline:
                checker.violation = (
                    f"not at rest {REST_DEADLINE_S:.0f} s after the faults stopped: {unrest}"
                )
                return
            await asyncio.sleep(0.05)
        ticking.cancel()
        if checker.violation is None:
            with contextlib.suppress(Violation):
                view = settle_polling(world, mz) if self.polling else self._view(mz, world)
                checker.at_rest(view, checker.last_progress)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    _HANDLER.found.append(f"event loop: {context.get('message')}: {error!r}")


def _unretrieved(tasks: list[asyncio.Task[Any]]) -> None:
    """Tasks that failed and whose exception nobody retrieved (asyncio's own flag, read
    before anything retrieves it), as unexpected errors; then silenced."""
    for task in tasks:
        if task.done() and not task.cancelled() and getattr(task, "_log_traceback", False):
            _HANDLER.found.append(
                f"task {task.get_coro().__qualname__} failed and nobody retrieved its "  # type: ignore[union-attr]
                f"exception: {task.exception()!r}"
            )


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def run_schedule(
    seed: int,
    runner: type[PartitionRunner] = PartitionRunner,
    *,
    held: bool = False,
    drop: frozenset[int] = frozenset(),
    session: type[SubscribeSession] = SubscribeSession,
    gc_deletes: float | None = None,
    polling: bool = False,
    poller: type[Poller] = Poller,
    redis_nodes: int = 1,
    product_first_read: bool = False,
) -> Outcome:
    """Run schedule ``seed`` to the end (or its first broken invariant); ``held`` adds a
    bulk held up on the way past OpenSearch's default gc_deletes (see :func:`_chaos`);
    ``drop`` leaves those chaos events out (numbers as the report shows them);
    ``session`` is the producer's session class (a planted bug); ``gc_deletes`` the
    index's, when not the one searchsync creates indexes with; ``polling``: producers
    poll or SUBSCRIBE (tests.sim.polling), ``poller`` the Poller class (a planted bug);
    ``redis_nodes`` > 1: the producer writes as on a cluster of that many masters;
    ``product_first_read``: runners size their first read as the product does, not as
    when the regression seeds were found (World.first_read_guess)."""
    _HANDLER.found = []
    random.seed(seed)  # the backoff jitter (common.backoff) draws from the global generator
    loop = VirtualLoop()
    # a task whose exception nobody retrieved: asyncio logs it as an ERROR in production
    # (when the task is garbage-collected: at no fixed step, so every task is looked at
    # once the schedule is over, _unretrieved)
    loop.set_exception_handler(_loop_error)
    tasks: list[asyncio.Task[Any]] = []
    owners: dict[asyncio.Task[Any], object] = {}

    def track(loop: asyncio.AbstractEventLoop, coro: Any, context: Any = None) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, context=context)
        tasks.append(task)
        # the simulated process whose task created it (or the one it is started for)
        owner = context.get(PROCESS) if context is not None else PROCESS.get()
        if owner is not None:
            owners[task] = owner
        return task

    loop.set_task_factory(track)
    plan = _Run(
        seed, runner, held, drop, session, polling=polling or poller is not Poller, poller=poller
    )
    settings = Settings(
        **SIM_SETTINGS,  # type: ignore[arg-type]
        stream_partitions=plan.partitions,
        subscribe_envelope=plan.envelope,
    )
    world = World(seed, loop, settings, plan.partitions)
    world.owners = owners
    world.redis_nodes = redis_nodes
    if product_first_read:
        world.first_read_guess = None
    if gc_deletes is not None:
        world.index.gc_deletes = gc_deletes
    elif held and HOLD_S[1] >= gc_deletes_of(settings):
        raise ValueError("a held bulk must land within the index's gc_deletes")
    with _quiet_logs():
        try:
            loop.run_until_complete(plan.main(world))
        finally:
            world.finished = True
            _cancel_all(loop)
            loop.close()
            _unretrieved(tasks)
    key = world.checker.key
    about = []
    if key is not None:
        pattern = re.compile(rb"\b%s\b" % re.escape(key))
        about = [t for t in world.steps_log if pattern.search(t.encode())][-40:]
    replay = f"python -m tests.sim --seed {seed}"
    plants: dict[str, object] = {**PLANTS, **PRODUCER_PLANTS, **POLLER_PLANTS}
    chosen = (runner, session, poller)
    plant = next((name for name, planted in plants.items() if planted in chosen), None)
    replay += f" --plant {plant}" if plant else ""
    replay += " --polling" if plan.polling and poller is Poller else ""
    replay += " --held-bulks" if held else ""
    replay += f" --gc-deletes {gc_deletes:g}" if gc_deletes is not None else ""
    replay += f" --drop {','.join(map(str, sorted(drop)))}" if drop else ""
    replay += f" --redis-nodes {redis_nodes}" if redis_nodes != 1 else ""
    return Outcome(
        seed=seed,
        about_key=about,
        chaos_events=plan.planned,
        sessions=world.sessions,
        reconciles=len(world.checker.reconciled),
        reconcile_deletes=world.checker.reconcile_deletes,
        covered_late=world.checker.covered_late,
        covered_by_marker=world.checker.covered_by_marker,
        settled_below_marker=world.checker.settled_below_marker,
        fenced_progress=world.checker.fenced_progress,
        fenced_reconciles=world.checker.fenced_reconciles,
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
    seed: int,
    runner: type[PartitionRunner] = PartitionRunner,
    *,
    held: bool = False,
    session: type[SubscribeSession] = SubscribeSession,
    gc_deletes: float | None = None,
    polling: bool = False,
    poller: type[Poller] = Poller,
    redis_nodes: int = 1,
    product_first_read: bool = False,
) -> Outcome:
    """The failing schedule ``seed`` with as few chaos events as still break the same
    invariant: each event is left out in turn and stays out if the failure remains
    (one run per event). Leaving one out also moves the seeded draws after it, so the
    result is a schedule that fails, not a proof that each event left is needed."""
    options = {
        "held": held, "session": session, "gc_deletes": gc_deletes,
        "polling": polling, "poller": poller, "redis_nodes": redis_nodes,
        "product_first_read": product_first_read,
    }  # fmt: skip
    best = run_schedule(seed, runner, **options)  # type: ignore[arg-type]
    if best.ok:
        return best
    kind, dropped = _kind(best), frozenset[int]()
    for number in range(best.chaos_events):
        trial = run_schedule(seed, runner, drop=dropped | {number}, **options)  # type: ignore[arg-type]
        if not trial.ok and _kind(trial) == kind:
            dropped, best = dropped | {number}, trial
    return best
