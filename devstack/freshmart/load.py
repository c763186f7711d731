"""The load generator: realistic FreshMart changes, one transaction each.

What a change is and writes is planned in :mod:`devstack.freshmart.changes`
(pure); this module does the I/O: :func:`execute_writes` commits one change as
one statement and returns the wall-clock time right after COMMIT, :func:`run`
writes a steady rate of changes with a few transactions in flight, :func:`main`
is ``devstack/load``.

Library use (other tests)::

    state = load_state(conn)             # conn: autocommit, search_path at the schema
    rng = random.Random(7)
    record = apply_change(conn, ChangeKind.ADDRESS_EDIT, rng, state)
    record.order_ids, record.commit_ts, record.deleted
    customer = customer_with_orders(state, rng, min_orders=3)

Command line (``devstack/load``)::

    devstack/load --rate R --seconds S [--seed S] [--schema public] [--record FILE.jsonl]
                  [--connections 8]

``--record`` writes one JSON object per committed change:
``{"kind", "order_ids", "commit_ts", "deleted", "sent_ts"}`` (epoch seconds: the
COMMIT happened between ``sent_ts`` and ``commit_ts``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from devstack.freshmart.changes import (
    DEFAULT_MIX,
    STATE_PREDICATES,
    ChangeKind,
    ChangeNotApplicable,
    ChangeRecord,
    LoadState,
    PlannedChange,
    Writes,
    choose_kind,
    conflict_keys,
    customer_with_orders,
    plan_change,
    state_from_rows,
    write_statement,
)

__all__ = [
    "ChangeKind",
    "ChangeNotApplicable",
    "ChangeRecord",
    "LoadState",
    "RunSummary",
    "apply_change",
    "apply_change_async",
    "customer_with_orders",
    "execute_writes",
    "execute_writes_async",
    "load_state",
    "load_state_async",
    "run",
]


def execute_writes(conn: psycopg.Connection[Any], writes: Writes) -> float:
    """Run ``writes`` in one transaction on the ``triples`` of conn's search_path.

    Returns time.time() taken right after COMMIT returned. ``conn`` must have no
    transaction open (ValueError otherwise), so the commit is a real one; in
    autocommit mode this is one round trip. Raises psycopg.Error on failure
    (nothing written). No timeout of its own: set ``statement_timeout`` on the
    connection if you need one.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("execute_writes needs a connection with no transaction open")
    statement = write_statement(writes)
    if statement is None:
        return time.time()
    query, params = statement
    if conn.autocommit:
        conn.execute(query, params)
    else:
        with conn.transaction():
            conn.execute(query, params)
    return time.time()


async def execute_writes_async(conn: psycopg.AsyncConnection[Any], writes: Writes) -> float:
    """:func:`execute_writes` for an async connection (same guarantees)."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError("execute_writes needs a connection with no transaction open")
    statement = write_statement(writes)
    if statement is None:
        return time.time()
    query, params = statement
    if conn.autocommit:
        await conn.execute(query, params)
    else:
        async with conn.transaction():
            await conn.execute(query, params)
    return time.time()


def apply_change(
    conn: psycopg.Connection[Any],
    kind: ChangeKind,
    rng: random.Random,
    state: LoadState,
    now: datetime | None = None,
) -> ChangeRecord:
    """Plan a change of ``kind``, commit it, update ``state``; return what was done.

    Raises ChangeNotApplicable (nothing written), ValueError if ``conn`` has a
    transaction open, psycopg.Error if the write fails (state left unchanged).
    """
    change = plan_change(kind, rng, state, now or datetime.now(UTC))
    sent_ts = time.time()
    commit_ts = execute_writes(conn, change.writes)
    state.absorb(change)
    return ChangeRecord(change.kind, change.order_ids, commit_ts, change.deleted, sent_ts)


async def apply_change_async(
    conn: psycopg.AsyncConnection[Any],
    kind: ChangeKind,
    rng: random.Random,
    state: LoadState,
    now: datetime | None = None,
) -> ChangeRecord:
    """:func:`apply_change` for an async connection (same guarantees)."""
    change = plan_change(kind, rng, state, now or datetime.now(UTC))
    sent_ts = time.time()
    commit_ts = await execute_writes_async(conn, change.writes)
    state.absorb(change)
    return ChangeRecord(change.kind, change.order_ids, commit_ts, change.deleted, sent_ts)


_STATE_QUERY: LiteralString = (
    "SELECT subject_id, predicate, object_value FROM triples WHERE predicate = ANY(%s) ORDER BY id"
)


def load_state(conn: psycopg.Connection[Any]) -> LoadState:
    """Read the state from the ``triples`` of conn's search_path (one query; ~1 s at 25k orders)."""
    with conn.cursor() as cur:
        cur.execute(_STATE_QUERY, (STATE_PREDICATES,))
        return state_from_rows(cur.fetchall())


async def load_state_async(conn: psycopg.AsyncConnection[Any]) -> LoadState:
    """:func:`load_state` for an async connection."""
    async with conn.cursor() as cur:
        await cur.execute(_STATE_QUERY, (STATE_PREDICATES,))
        return state_from_rows(await cur.fetchall())


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True, slots=True)
class RunSummary:
    changes: int
    seconds: float
    by_kind: dict[str, int]
    fallbacks: int  # drawn kinds with nothing to act on, written as new orders instead

    @property
    def rate(self) -> float:
        return self.changes / self.seconds if self.seconds > 0 else 0.0


def _plan_next(
    rng: random.Random, state: LoadState, mix: Mapping[ChangeKind, int]
) -> tuple[PlannedChange, bool]:
    now = datetime.now(UTC)
    try:
        return plan_change(choose_kind(rng, mix), rng, state, now), False
    except ChangeNotApplicable:
        return plan_change(ChangeKind.NEW_ORDER, rng, state, now), True


class _Dispatcher:
    """Keeps up to one write per connection in flight, in planned order per key."""

    def __init__(
        self, connections: list[psycopg.AsyncConnection[Any]], record: IO[str] | None
    ) -> None:
        self.idle: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
        for conn in connections:
            self.idle.put_nowait(conn)
        self.record = record
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures: list[BaseException] = []
        self.by_kind: Counter[str] = Counter()
        self.done = 0

    async def dispatch(self, change: PlannedChange, state: LoadState) -> None:
        """Wait for a free connection and earlier writes of the same keys, then start."""
        keys = conflict_keys(change)
        blockers = {t for k in keys if (t := self.in_flight.get(k)) is not None and not t.done()}
        if blockers:
            await asyncio.wait(blockers)
        conn = await self.idle.get()
        state.absorb(change)  # now, so the next plan already sees this change
        task = asyncio.create_task(self._write(conn, change))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        for key in keys:
            self.in_flight[key] = task
        if len(self.in_flight) > 10_000:  # forget finished writes now and then
            self.in_flight = {k: t for k, t in self.in_flight.items() if not t.done()}

    async def _write(self, conn: psycopg.AsyncConnection[Any], change: PlannedChange) -> None:
        sent_ts = time.time()
        try:
            commit_ts = await execute_writes_async(conn, change.writes)
        except psycopg.Error as exc:
            self.failures.append(exc)
            return
        finally:
            self.idle.put_nowait(conn)
        self.done += 1
        self.by_kind[change.kind] += 1
        if self.record is not None:
            rec = ChangeRecord(change.kind, change.order_ids, commit_ts, change.deleted, sent_ts)
            self.record.write(rec.to_json() + "\n")

    async def drain(self) -> None:
        """Wait for the writes in flight; raise the first failure, if any."""
        if self.tasks:
            await asyncio.wait(set(self.tasks))
        if self.failures:
            raise self.failures[0]


async def run(
    connections: list[psycopg.AsyncConnection[Any]],
    state: LoadState,
    rng: random.Random,
    *,
    rate: float,
    seconds: float,
    mix: Mapping[ChangeKind, int] = DEFAULT_MIX,
    record: IO[str] | None = None,
    stop: asyncio.Event | None = None,
) -> RunSummary:
    """Write about ``rate`` changes per second for ``seconds`` seconds.

    One change per transaction, up to ``len(connections)`` in flight: a commit
    waits for its WAL flush (~2 ms here), so one connection tops out at a few
    hundred changes/s. Changes are planned in sequence and ``state`` absorbs each
    one when it is dispatched; two changes touching the same order, task or
    customer commit in planned order. A late change is written at once, so a
    slow stretch is caught up. A drawn kind with nothing to act on becomes a new
    order. Returns early when ``stop`` is set. Raises ChangeNotApplicable if not
    even a new order can be planned (no stores), psycopg.Error if a write fails
    (after the writes in flight finish).
    """
    interval = 1.0 / rate
    dispatcher = _Dispatcher(connections, record)
    fallbacks = 0
    planned = 0
    started = time.monotonic()
    while not dispatcher.failures and not (stop is not None and stop.is_set()):
        due = started + planned * interval
        if due - started >= seconds or time.monotonic() - started >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        change, fell_back = _plan_next(rng, state, mix)
        fallbacks += fell_back
        await dispatcher.dispatch(change, state)
        planned += 1
    await dispatcher.drain()
    return RunSummary(
        dispatcher.done, time.monotonic() - started, dict(dispatcher.by_kind), fallbacks
    )


async def _main(args: argparse.Namespace, seed: int, record: IO[str] | None) -> RunSummary:
    connections: list[psycopg.AsyncConnection[Any]] = []
    search_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(args.schema))
    try:
        for _ in range(args.connections):
            conn = await psycopg.AsyncConnection.connect(args.dsn, autocommit=True)
            connections.append(conn)
            await conn.execute(search_path)
        t0 = time.monotonic()
        state = await load_state_async(connections[0])
        print(
            f"loaded state of {len(state.orders)} orders, {len(state.customers)} customers "
            f"from {args.schema}.triples in {time.monotonic() - t0:.1f}s; writing "
            f"{args.rate:g} changes/s for {args.seconds:g}s over {args.connections} "
            f"connections (--seed {seed})",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await run(
            connections,
            state,
            random.Random(seed),
            rate=args.rate,
            seconds=args.seconds,
            record=record,
            stop=stop,
        )
    finally:
        for conn in connections:
            await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devstack/load", description="Write realistic FreshMart changes at a steady rate."
    )
    parser.add_argument("--rate", type=float, required=True, help="changes per second")
    parser.add_argument("--seconds", type=float, required=True, help="how long to run")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--schema", default="public", help="schema of triples (default: public)")
    parser.add_argument("--record", default=None, help="write one JSON line per change here")
    parser.add_argument(
        "--connections", type=int, default=8, help="transactions in flight (default: 8)"
    )
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""))
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.connections < 1:
        parser.error("--rate and --seconds must be > 0, --connections >= 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    try:
        with contextlib.ExitStack() as files:
            record = (
                files.enter_context(open(args.record, "w", buffering=1, encoding="utf-8"))
                if args.record
                else None
            )
            summary = asyncio.run(_main(args, seed, record))
    except (psycopg.Error, ChangeNotApplicable, OSError) as exc:
        print(f"load failed: {exc}", file=sys.stderr)
        return 1
    kinds = ", ".join(f"{k}={summary.by_kind.get(k, 0)}" for k in ChangeKind)
    print(
        f"wrote {summary.changes} changes in {summary.seconds:.1f}s: "
        f"{summary.rate:.1f} changes/s (target {args.rate:g}); {kinds}; "
        f"{summary.fallbacks} drawn kinds had nothing to act on and became new orders",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
