"""One simulated world: clock, seeded randomness, the service models, faults, trace."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from searchsync.common.config import Settings
from searchsync.common.keys import Keys

from .index import IndexModel, gc_deletes_of
from .invariants import Checker
from .loop import VirtualLoop
from .streams import RedisModel

if TYPE_CHECKING:
    from .producer import SimMaterialize

__all__ = ["EPOCH_MS", "PROCESS", "Faults", "SimClock", "World"]

# The simulated process a task belongs to (inherited by the tasks it creates), so that a
# kill -9 ends all of them (tests.sim.producer.SimProducer.crash).
PROCESS: contextvars.ContextVar[object | None] = contextvars.ContextVar("PROCESS", default=None)

# Wall-clock ms at virtual time 0 (Materialize timestamps are wall-clock ms).
EPOCH_MS = 1_700_000_000_000


@dataclass(slots=True)
class Faults:
    """Failure rates in force now (0 = none); the chaos schedule changes them."""

    redis_error: float = 0.0  # a Redis call fails (before it ran, or after: reply lost)
    bulk_error: float = 0.0  # a bulk fails as a whole: 429, or no answer (applied or not)
    throttle: float = 0.0  # an item answered 429
    item_fail: float = 0.0  # an item answered 500
    slow: float = 0.0  # a call waits up to slow_max seconds before and after it runs
    slow_max: float = 0.0
    os_down: bool = False  # OpenSearch answers nothing, not even the probe
    mz_error: float = 0.0  # a Materialize call fails (the connection is lost)


class SimClock:
    """consumer.ports.Clock on the virtual loop."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.now

    def time(self) -> float:
        return EPOCH_MS / 1000 + self._loop.now


class World:
    def __init__(self, seed: int, loop: VirtualLoop, settings: Settings, partitions: int) -> None:
        self.seed = seed
        self.loop = loop
        self.rng = random.Random(seed)
        self.settings = settings
        self.keys = Keys("simview", partitions)
        self.partitions = partitions
        self.clock = SimClock(loop)
        self.redis = RedisModel(self.now_ms)
        self.index = IndexModel(lambda: loop.now, gc_deletes_of(settings))
        self.faults = Faults()
        self.checker = Checker(self)
        # Materialize's model (tests.sim.producer.SimMaterialize), once the schedule made it
        self.mz: SimMaterialize | None = None
        self.trace: deque[str] = deque(maxlen=40)
        self.steps_log: list[str] = []  # every step, for the lines about a failure's key
        self._digest = hashlib.blake2b(digest_size=8)
        self.steps = 0
        self.sessions = 0  # SUBSCRIBE sessions the producers started (each from the checkpoint)
        # set once the schedule is over: the teardown (in no fixed order) is not traced
        self.finished = False
        # bulks held up on the way (tests.sim.services.SimSink): the next bulk sent is held
        # this long, then applied; ``ghosts`` counts those still on the way
        self.hold_next_bulk = 0.0
        self.ghosts = 0
        # masters of a Redis Cluster the producer's round trips are routed over (its
        # commands grouped per node, producer.writer.group_by_node); 1: a single Redis
        self.redis_nodes = 1
        # the changes per entry a runner assumes before a batch's or a takeover's first
        # read; 1.0 (it then starts from its last read's figure): what the runner did
        # when the regression seeds were found (their schedules depend on read sizes);
        # None: the product's (PartitionRunner's, the most an entry holds;
        # tests/integration/test_consumer_sync.py covers its sizing)
        self.first_read_guess: float | None = 1.0
        # task -> the simulated process it belongs to (filled by run_schedule's task factory)
        self.owners: dict[asyncio.Task[Any], object] = {}
        # woken when an entry is added to a stream (a blocking XREADGROUP returns)
        self.new_data: dict[str, asyncio.Event] = {}

    def now_ms(self) -> int:
        return EPOCH_MS + int(self.loop.now * 1000)

    def note(self, line: str) -> None:
        """One step of the trace (the tail is printed on failure; all of it is hashed)."""
        if self.finished:
            return
        text = f"{self.loop.now:9.3f} {line}"
        self.trace.append(text)
        self.steps_log.append(text)
        self._digest.update(text.encode())
        self.steps += 1

    def digest(self) -> str:
        """A fingerprint of every step so far: two runs of a seed must agree."""
        return self._digest.hexdigest()

    def data_event(self, stream: str) -> asyncio.Event:
        event = self.new_data.get(stream)
        if event is None:
            event = self.new_data[stream] = asyncio.Event()
        return event

    def wake(self, stream: str) -> None:
        event = self.new_data.pop(stream, None)
        if event is not None:
            event.set()
