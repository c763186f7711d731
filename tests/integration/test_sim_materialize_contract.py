"""The simulator's Materialize model (tests.sim.producer) against the Materialize emulator.

Every check runs twice: on :class:`~tests.sim.producer.SimMaterialize` through
:class:`~tests.sim.producer.SimRowSource`, and on a private emulator
(devstack/mzemu, the devstack's stand-in for Materialize; Materialize itself cannot
run here) through the product's own row source, producer.subscribe.Subscription
opened by producer.adapters.open_subscription. Both are producer.ports.RowSource,
read here as the session reads them (producer.rows.parse_rows). When the model and
the emulator disagree, the same check fails on one side only, so the model the
simulator runs the producer on cannot drift from what the producer meets.

Checked: PROGRESS rows with strictly rising timestamps, the first at the AS OF; AS
OF t gives the snapshot at t then the changes after t, in both envelopes
(``SUBSCRIBE_ENVELOPE`` diffs and upsert); several changes at one timestamp split
over FETCHes arrive before the progress row above it; an AS OF below the view's
since (history compacted) refused before any row with Materialize's error, which
the product's producer.resume.as_of_refused recognises (the emulator and the model
refuse at the first FETCH, where the emulator starts a cursor's subscription;
Materialize's docs do not say whether DECLARE or the first FETCH refuses, the
session handles both, and so does the check); a cancel ending a waiting FETCH with
QueryCanceled; a lost connection surfacing as psycopg.OperationalError, which
common.errors calls transient (the service backs off and resumes).

The emulator (one for the module, over its own small FreshMart schema) ticks only
when told (``mzemu_tick()``), so both sides close timestamps at the same steps;
each check adds its own orders and reads only their keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from searchsync.common.config import Settings
from searchsync.common.errors import is_transient
from searchsync.producer.adapters import open_subscription
from searchsync.producer.ports import RowSource
from searchsync.producer.resume import as_of_refused
from searchsync.producer.rows import Event, Layout, Progress, Rejected, parse_rows
from searchsync.producer.subscribe import Envelope, Subscription, connect
from tests.sim.loop import VirtualLoop
from tests.sim.producer import SimMaterialize, SimRowSource
from tests.sim.services import SimProcess
from tests.sim.world import World
from tests.support.mzemu import Emulator, create_schema, drop_schema, start_emulator

pytestmark = pytest.mark.timeout(60)

# How long one FETCH may take on either side before the check fails (a FETCH that
# should return rows, or a waiting one that should be cancelled).
FETCH_WAIT_S = 10.0
VIEW = "orders_search_source_mv"


class Backend:
    """A view behind a row source: make changes, close timestamps, compact, cut."""

    async def add(self, count: int) -> list[str]:
        """``count`` new keys in the view, closed at a timestamp of their own."""
        raise NotImplementedError

    async def update(self, *keys: str) -> None:
        """Change each key's row (closed at the next tick)."""
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        raise NotImplementedError

    async def tick(self) -> int:
        """Close a timestamp now; returns it."""
        raise NotImplementedError

    async def compact(self) -> int:
        """Forget the retained history; returns the new since."""
        raise NotImplementedError

    async def frontier(self) -> int:
        """The upper: every time below is closed."""
        raise NotImplementedError

    async def open(self, envelope: Envelope, *, one_row_fetches: bool = False) -> RowSource:
        """A connected row source; ``one_row_fetches``: each FETCH returns one row."""
        raise NotImplementedError

    async def lose_connections(self) -> None:
        """Every row source's connection is lost (Materialize restarted, a cut)."""
        raise NotImplementedError


class ModelBackend(Backend):
    def __init__(self) -> None:
        self.loop = VirtualLoop()  # only its clock: moved by tick()
        self.world = World(0, self.loop, Settings(), partitions=1)
        self.mz = SimMaterialize(self.world, "diffs")
        self.amounts = 0
        self.numbers = 1000
        self.sources: list[SimRowSource] = []

    async def add(self, count: int) -> list[str]:
        keys = []
        for _ in range(count):
            self.numbers += 1
            keys.append(f"order:FM-{self.numbers}")
        await self.update(*keys)
        await self.tick()
        return keys

    async def update(self, *keys: str) -> None:
        for key in keys:
            self.amounts += 1
            self.mz.stage(key, (key, str(self.amounts)))

    async def delete(self, key: str) -> None:
        self.mz.stage(key, None)

    async def tick(self) -> int:
        self.loop.now += 0.005
        return self.mz.tick()

    async def compact(self) -> int:
        self.mz.compact(self.mz.upper - 1)
        return self.mz.since

    async def frontier(self) -> int:
        return self.mz.upper

    async def open(self, envelope: Envelope, *, one_row_fetches: bool = False) -> RowSource:
        self.mz.envelope = envelope
        settings = Settings(subscribe_envelope=envelope)
        source = SimRowSource(self.mz, SimProcess(self.world, "producer"), settings)
        if one_row_fetches:
            source.fetch_max = 1
        self.sources.append(source)
        return source

    async def lose_connections(self) -> None:
        for source in self.sources:
            source.lose()


class RealBackend(Backend):
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.sources: list[RowSource] = []

    def settings(self, envelope: Envelope) -> Settings:
        return Settings(
            mz_host=self.emulator.host,
            mz_port=self.emulator.port,
            mz_sslmode="disable",
            view_name=VIEW,
            subscribe_envelope=envelope,
        )

    async def add(self, count: int) -> list[str]:
        """New orders of customer C-1 at store S-1 (create_schema made both)."""
        with self.emulator.pg() as pg, pg.transaction():
            row = pg.execute(
                "SELECT coalesce(max(substr(subject_id, 10)::int), 1000) FROM triples "
                "WHERE subject_id LIKE 'order:FM-%' AND predicate = 'order_number'"
            ).fetchone()
            first = int(str(row[0])) + 1 if row else 1001
            for n in range(first, first + count):
                order = f"order:FM-{n}"
                triples = [
                    (order, "order_number", f"FM-{n}", "string"),
                    (order, "order_status", "placed", "string"),
                    (order, "order_store", "store:S-1", "entity_ref"),
                    (order, "placed_by", "customer:C-1", "entity_ref"),
                ]
                pg.cursor().executemany(
                    "INSERT INTO triples (subject_id, predicate, object_value, object_type) "
                    "VALUES (%s, %s, %s, %s)",
                    triples,
                )
        await self.tick()
        return [f"order:FM-{n}" for n in range(first, first + count)]

    async def update(self, *keys: str) -> None:
        with self.emulator.pg() as pg, pg.transaction():
            for key in keys:
                pg.execute(
                    "UPDATE triples SET object_value = object_value || '+', updated_at = now() "
                    "WHERE subject_id = %s AND predicate = 'order_status'",
                    (key,),
                )

    async def delete(self, key: str) -> None:
        with self.emulator.pg() as pg, pg.transaction():
            pg.execute(
                "DELETE FROM triples WHERE subject_id = %s OR subject_id IN "
                "(SELECT subject_id FROM triples WHERE object_value = %s "
                "AND predicate IN ('line_of_order', 'task_of_order'))",
                (key, key),
            )

    async def tick(self) -> int:
        return self.emulator.admin("mzemu_tick()")

    async def compact(self) -> int:
        return self.emulator.admin("mzemu_compact()")

    async def frontier(self) -> int:
        return self.emulator.admin("mzemu_frontier()")

    async def open(self, envelope: Envelope, *, one_row_fetches: bool = False) -> RowSource:
        settings = self.settings(envelope)
        source: RowSource
        if one_row_fetches:
            source = Subscription(
                await connect(settings),
                view=VIEW,
                envelope=envelope,
                key_column=settings.key_column,
                fetch_rows=1,
            )
        else:
            source, _ = await open_subscription(settings)
        self.sources.append(source)
        return source

    async def lose_connections(self) -> None:
        self.emulator.admin("mzemu_drop_connections()")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One private emulator for the module: its own small schema, ticks only on demand."""
    schema = create_schema(orders=0)
    try:
        running = start_emulator(schema, tick_ms=3_600_000, retain_ms=600_000)
        try:
            yield running
        finally:
            running.close()
    finally:
        drop_schema(schema)


@pytest.fixture(params=["model", "real"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    chosen: Backend
    if request.param == "model":
        chosen = ModelBackend()
    else:
        chosen = RealBackend(request.getfixturevalue("emulator"))
    try:
        yield chosen
    finally:
        for source in getattr(chosen, "sources", []):
            with contextlib.suppress(Exception):
                await source.close()
        if isinstance(chosen, ModelBackend):
            chosen.loop.close()


class Reader:
    """A row source read as producer.session reads it: FETCH after FETCH, parsed."""

    def __init__(self, source: RowSource) -> None:
        self.source = source
        self.events: list[Event] = []
        self.fetches: list[list[Event]] = []

    @property
    def layout(self) -> Layout:
        assert self.source.layout is not None
        return self.source.layout

    async def fetch(self) -> list[Event]:
        rows = await asyncio.wait_for(self.source.fetch(), FETCH_WAIT_S)
        assert rows, "a FETCH returned no row"
        rejected: list[Rejected] = []
        events = parse_rows(self.layout, rows, rejected)
        assert not rejected
        self.events += events
        self.fetches.append(events)
        return events

    async def until(self, done: Callable[[list[Event]], bool]) -> list[Event]:
        """FETCH until ``done(events so far)``; the events read by these FETCHes."""
        start = len(self.events)
        while not done(self.events[start:]):
            await self.fetch()
        return self.events[start:]

    async def through(self, frontier: int) -> list[Event]:
        """FETCH until a progress row at ``frontier`` or above."""
        return await self.until(lambda events: reached(events, frontier))


def reached(events: list[Event], frontier: int) -> bool:
    return any(isinstance(e, Progress) and e.ts >= frontier for e in events)


def progress_of(events: list[Event]) -> list[int]:
    return [e.ts for e in events if isinstance(e, Progress)]


def data_of(events: list[Event], keys: list[str]) -> list[tuple[int, str, object]]:
    """(ts, key, diff or upsert state) of the data rows of ``keys``, in order."""
    return [(e[0], e[1], e[2]) for e in events if not isinstance(e, Progress) and e[1] in keys]


async def test_progress_rows_rise_strictly_and_the_first_is_at_the_as_of(
    backend: Backend,
) -> None:
    keys = await backend.add(2)
    reader = Reader(await backend.open("diffs"))
    await reader.source.declare(as_of=None, snapshot=True)
    first = await reader.fetch()
    assert isinstance(first[0], Progress)  # the AS OF, before any row
    as_of = first[0].ts
    for key in keys:
        await backend.update(key)
        await backend.tick()
    await backend.tick()  # an empty tick: a progress row all the same
    await reader.through(await backend.frontier())
    stamps = progress_of(reader.events)
    assert stamps[0] == as_of
    assert all(a < b for a, b in itertools.pairwise(stamps)), stamps
    assert stamps[-1] == await backend.frontier()
    # the snapshot is at the AS OF; each change at a ts between two progress rows
    for ts, _key, _diff in data_of(reader.events, keys):
        assert ts >= as_of


@pytest.mark.parametrize("envelope", ["diffs", "upsert"])
async def test_as_of_gives_the_snapshot_at_that_time_then_the_changes_after_it(
    backend: Backend, envelope: Envelope
) -> None:
    a, b, c = await backend.add(3)
    t0 = await backend.tick()
    await backend.update(a)
    t1 = await backend.tick()
    await backend.delete(b)
    t2 = await backend.tick()
    reader = Reader(await backend.open(envelope))
    await reader.source.declare(as_of=t0, snapshot=True)
    events = await reader.through(t2 + 1)
    assert isinstance(events[0], Progress) and events[0].ts == t0
    keys = [a, b, c]
    got = data_of(events, keys)
    snapshot = sorted((key, diff) for ts, key, diff in got if ts == t0)
    later = sorted((ts, key, diff) for ts, key, diff in got if ts > t0)
    if envelope == "diffs":
        assert snapshot == [(a, 1), (b, 1), (c, 1)]
        assert later == [(t1, a, -1), (t1, a, 1), (t2, b, -1)]
    else:
        assert snapshot == [(a, "upsert"), (b, "upsert"), (c, "upsert")]
        assert later == [(t1, a, "upsert"), (t2, b, "delete")]
    assert not [ts for ts, _, _ in got if ts < t0]
    # each data row is below the progress row that follows it
    for i, event in enumerate(events):
        if not isinstance(event, Progress):
            after = next(e.ts for e in events[i:] if isinstance(e, Progress))
            assert event[0] < after, (event, after)


async def test_changes_at_one_ts_split_over_fetches_all_come_before_the_progress_row_above(
    backend: Backend,
) -> None:
    keys = await backend.add(3)
    reader = Reader(await backend.open("diffs", one_row_fetches=True))
    await reader.source.declare(as_of=None, snapshot=False)
    await reader.through(await backend.frontier())
    await backend.update(*keys)
    ts = await backend.tick()
    before = len(reader.fetches)
    events = await reader.through(ts + 1)
    fetches = reader.fetches[before:]
    assert sorted(data_of(events, keys)) == sorted(
        [(ts, key, -1) for key in keys] + [(ts, key, 1) for key in keys]
    )
    carrying = [f for f in fetches if data_of(f, keys)]
    assert len(carrying) >= 2  # the timestamp's rows were split over FETCHes
    above = next(i for i, e in enumerate(events) if isinstance(e, Progress) and e.ts > ts)
    assert not data_of(events[above:], keys)  # all of them before the progress row above ts


async def test_an_as_of_below_the_since_is_refused_before_any_row(backend: Backend) -> None:
    await backend.add(1)
    t0 = await backend.tick()
    await backend.tick()
    since = await backend.compact()
    assert since > t0
    source = await backend.open("diffs")
    error: psycopg.Error | None = None
    rows: Sequence[Any] = []
    try:
        await source.declare(as_of=t0, snapshot=False)  # Materialize may refuse here …
        rows = await asyncio.wait_for(source.fetch(), FETCH_WAIT_S)  # … the emulator here
    except psycopg.Error as refused:
        error = refused
    assert error is not None and not rows, f"AS OF {t0} below since {since} gave {rows}"
    assert isinstance(error, psycopg.errors.DataException), type(error)
    assert as_of_refused(str(error)), str(error)
    assert "could not find a valid timestamp for the query" in str(error)
    # at the since itself the history is there
    reader = Reader(await backend.open("diffs"))
    await reader.source.declare(as_of=since, snapshot=True)
    first = await reader.fetch()
    assert isinstance(first[0], Progress) and first[0].ts == since


async def test_as_of_at_least_moves_up_to_the_since_and_waits_for_a_time_not_closed(
    backend: Backend,
) -> None:
    """What a written snapshot is declared with (producer.resume: AT LEAST the streams'
    high-water mark): never refused; at or above the since; a time not closed yet is
    waited for."""
    await backend.add(1)
    t0 = await backend.tick()
    await backend.tick()
    since = await backend.compact()
    below = Reader(await backend.open("diffs"))
    await below.source.declare(as_of=t0, snapshot=True, at_least=True)
    first = await below.fetch()
    assert isinstance(first[0], Progress) and first[0].ts == since
    upper = await backend.frontier()
    ahead = Reader(await backend.open("diffs"))
    await ahead.source.declare(as_of=upper, snapshot=True, at_least=True)
    waiting = asyncio.create_task(ahead.fetch())
    await asyncio.sleep(0.2)
    assert not waiting.done()  # AS OF the upper: not readable until the next tick
    ts = await backend.tick()
    events = await asyncio.wait_for(waiting, FETCH_WAIT_S)
    assert isinstance(events[0], Progress) and events[0].ts == upper <= ts


async def test_a_cancel_ends_a_waiting_fetch_with_query_canceled(backend: Backend) -> None:
    await backend.add(1)
    reader = Reader(await backend.open("diffs"))
    await reader.source.declare(as_of=None, snapshot=True)
    await reader.through(await backend.frontier())
    waiting = asyncio.create_task(reader.source.fetch())
    await asyncio.sleep(0.2)  # the FETCH is on its way and waits: nothing is closed
    assert not waiting.done()
    await reader.source.cancel()
    with pytest.raises(psycopg.errors.QueryCanceled):
        await asyncio.wait_for(waiting, FETCH_WAIT_S)


async def test_a_lost_connection_is_an_operational_error_the_service_retries(
    backend: Backend,
) -> None:
    await backend.add(1)
    reader = Reader(await backend.open("diffs"))
    await reader.source.declare(as_of=None, snapshot=True)
    await reader.through(await backend.frontier())
    waiting = asyncio.create_task(reader.source.fetch())
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await backend.lose_connections()
    with pytest.raises(psycopg.OperationalError) as lost:
        await asyncio.wait_for(waiting, FETCH_WAIT_S)
    assert is_transient(lost.value)
    with pytest.raises(psycopg.OperationalError):
        await asyncio.wait_for(reader.source.fetch(), FETCH_WAIT_S)
