"""The emulator's dataflow: PostgreSQL in, timestamped diffs out.

At start the engine takes an advisory lock on the served schema (one emulator per
schema), installs the change capture (``capture.py``), and loads the whole view
in one REPEATABLE READ snapshot at the first timestamp. Every ``tick_ms`` it then,
again in one REPEATABLE READ transaction, takes and clears the keys the triggers
logged, re-reads only those keys' rows of the view, and turns the difference
into consolidated updates at the tick's timestamp (milliseconds since the epoch,
strictly increasing, shared by every subscription). Work per tick is proportional
to the keys touched, not to the view. ``SUBSCRIBE (SELECT …)`` of anything else
is re-evaluated in the same snapshot on ticks where something changed.

Timestamps: a tick at ``t`` closes ``t``: afterwards the upper frontier is
``t + 1``, ``mz_now()`` is ``t``, and history newer than ``t + 1 - retain_ms`` is
kept for ``AS OF``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from devstack.mzemu import errors
from devstack.mzemu.capture import LOG_TABLE, capture_install_sql
from devstack.mzemu.collection import Collection, Row, Update
from devstack.mzemu.config import EmulatorConfig
from devstack.mzemu.errors import MzError, Notice
from devstack.mzemu.heap import release_free_heap
from devstack.mzemu.output import OutputLayout
from devstack.mzemu.privileges import Privileges
from devstack.mzemu.statements import Subscribe
from devstack.mzemu.subscription import SubscribeSpec, Subscription
from devstack.mzemu.synthetic import SyntheticChanges
from devstack.mzemu.values import type_info
from devstack.mzemu.wire import ColumnDesc, encode_cells

__all__ = ["Engine", "Plan"]

log = logging.getLogger("mzemu.engine")

_KEY_BATCH = 10_000
_FETCH_CHUNK = 10_000
# The catalog id Materialize would show for the view in timestamp-selection errors.
_COLLECTION_ID = "u1"


@dataclass
class _Relation:
    """Something subscribable: the kept view, or a re-evaluated query."""

    name: str
    columns: tuple[ColumnDesc, ...]
    select_sql: sql.Composed  # returns every column cast to text
    key_index: int | None
    collection: Collection | None = None
    oid: int | None = None
    subscribers: set[Subscription] = field(default_factory=set)


@dataclass(frozen=True)
class Plan:
    """A described SUBSCRIBE: what to read and how its output looks."""

    statement: Subscribe
    layout: OutputLayout
    query: str | None  # None: the kept view


class Engine:
    """Owns the PostgreSQL connection, the view's collection and all subscriptions."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        # roles and grants, shared by every session (privileges.py)
        self.privileges = Privileges(config.user, config.password, config.view)
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lock = asyncio.Lock()
        self._last_ts = 0  # last timestamp handed out
        self.closed_ts = 0  # last timestamp whose tick completed (mz_now())
        self._paused_until = 0.0
        self._view: _Relation | None = None
        self._feeds: list[_Relation] = []
        self._tick_task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._pending: dict[Subscription, tuple[Subscribe, tuple[str | None, ...]]] = {}
        self._capture_installed = False
        self._warned_no_triples = False
        self._synthetic: SyntheticChanges | None = None
        self.synthetic_rate = config.synthetic_rate

    # -- lifecycle
    async def start(self) -> None:
        """Connect, lock the schema, install capture, load the view; start ticking.

        Raises MzError if another emulator serves the schema or PostgreSQL fails.
        """
        await self._reconnect()
        async with self._lock:
            await self._tick_locked()
        self._tick_task = asyncio.create_task(self._tick_loop(), name="mzemu-ticks")

    async def close(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
        if self._conn is not None:
            await self._conn.close()

    async def _reconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
        conn = await psycopg.AsyncConnection.connect(
            self.config.pg_dsn, autocommit=True, application_name="mzemu-engine"
        )
        schema = self.config.pg_schema
        try:
            await conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
            await conn.execute("SET TimeZone = 'UTC'")
            await conn.execute("SET DateStyle = 'ISO, MDY'")
            await conn.execute("SET IntervalStyle = 'postgres'")
            await conn.execute("SET extra_float_digits = 1")
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s))", (f"mzemu:{schema}",)
            )
            row = await cur.fetchone()
            if not row or not row[0]:
                raise MzError(
                    "55006", f"another emulator already serves PostgreSQL schema {schema!r}"
                )
            await conn.set_autocommit(False)
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    # -- timestamps
    def _next_ts(self) -> int:
        # rounded up: the tick's snapshot is already taken, and every change in it
        # committed before now, so its timestamp is not below its commit time
        ts = max(-(-time.time_ns() // 1_000_000), self._last_ts + 1)
        self._last_ts = ts
        return ts

    @property
    def view_since(self) -> int:
        coll = self._view.collection if self._view else None
        return coll.since if coll else 0

    @property
    def upper(self) -> int:
        return self.closed_ts + 1

    # -- ticking
    async def _tick_loop(self) -> None:
        period = self.config.tick_ms / 1000
        next_at = time.monotonic() + period
        failures = 0
        while True:
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
                self._wakeup.clear()
            next_at = max(next_at + period, time.monotonic())
            if time.monotonic() < self._paused_until:
                continue
            try:
                async with self._lock:
                    if time.monotonic() < self._paused_until:
                        continue  # paused while this tick waited for the lock
                    if self._conn is None or self._conn.closed:
                        await self._reconnect()
                    await self._tick_locked()
                failures = 0
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, MzError, OSError) as exc:
                failures += 1
                log.warning("tick failed (%s); retrying", exc)
                if isinstance(exc, psycopg.OperationalError) and self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                await asyncio.sleep(min(5.0, period * failures))

    async def tick_now(self) -> int:
        """Run one tick immediately (admin ``mzemu_tick()``); returns its timestamp."""
        async with self._lock:
            if self._conn is None or self._conn.closed:
                await self._reconnect()
            return await self._tick_locked()

    def set_synthetic_rate(self, rate: int) -> int:
        """Made-up changes a second from now on (admin ``mzemu_synthetic_rate(n)``)."""
        self.synthetic_rate = max(0, rate)
        log.info("synthetic changes: %d/s to %s", self.synthetic_rate, self.config.view)
        return self.synthetic_rate

    async def pause(self, ms: int) -> None:
        """Freeze the frontier for ``ms`` (admin ``mzemu_pause_ticks``): returns once a
        tick in flight has finished, so the frontier read after it stays put."""
        self._paused_until = time.monotonic() + ms / 1000
        async with self._lock:
            pass

    def resume(self) -> None:
        self._paused_until = 0.0
        self._wakeup.set()

    def compact(self) -> int:
        """Forget all retained history (admin ``mzemu_compact()``); returns the new since."""
        coll = self._view.collection if self._view else None
        if coll is None:
            return 0
        coll.compact(coll.upper - 1)
        return coll.since

    async def _tick_locked(self) -> int:
        conn = self._conn
        assert conn is not None
        config = self.config
        view = self._view
        if not self._capture_installed:
            await self._install_capture(conn)
        async with conn.transaction():
            cur = conn.cursor()
            await cur.execute(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (config.pg_schema, config.view),
            )
            found = await cur.fetchone()
            view_oid = int(found[0]) if found else None  # type: ignore[call-overload]
            # Stamped after the first statement fixed the snapshot, as Materialize
            # stamps a write after it happened upstream: a change committed between
            # the stamp and the snapshot would otherwise carry a time before its
            # commit (a reader comparing versions with commit times would wait for
            # it forever).
            ts = self._next_ts()
            log_rows: list[tuple[object, ...]] = []
            if await self._has_log(cur):
                await cur.execute(
                    sql.SQL("DELETE FROM {} RETURNING order_id, full_resync").format(
                        sql.Identifier(LOG_TABLE)
                    )
                )
                log_rows = await cur.fetchall()
            dirty = bool(log_rows)
            full = any(bool(r[1]) for r in log_rows)
            keys = {str(r[0]) for r in log_rows if r[0] is not None}
            reload = view_oid is not None and (view is None or view.oid != view_oid)
            view_rows: list[Row] | None = None
            if reload:
                view = await self._describe_view(cur, view_oid)  # type: ignore[arg-type]
                view_rows = await self._read(cur, view, None)
            elif view is not None and view_oid is not None and (full or keys):
                view_rows = await self._read(cur, view, None if full else sorted(keys))
            feed_rows: list[tuple[_Relation, list[Row]]] = []
            for feed in self._feeds:
                if feed.collection is None or dirty:
                    feed_rows.append((feed, await self._read(cur, feed, None)))
        self._apply(
            ts=ts,
            view=view,
            view_oid=view_oid,
            reload=reload,
            full=full,
            keys=keys,
            view_rows=view_rows,
            feed_rows=feed_rows,
        )
        self.closed_ts = ts
        if view_rows is not None and len(view_rows) > _FETCH_CHUNK:
            # libpq's result (the whole read as text) lives as long as the cursor object
            # (close() keeps it), and glibc keeps the heap pages it frees resident
            # under what was allocated after it (130 MB for 200,000 rows): drop it,
            # then give the pages back
            del cur
            release_free_heap()
        return ts

    async def _install_capture(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        """Install the triggers once ``triples`` exists (a schema may be seeded later)."""
        schema = self.config.pg_schema
        async with conn.transaction():
            cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".triples',))
            exists = await cur.fetchone()
            if exists and exists[0] is not None:
                await conn.execute(capture_install_sql(schema).encode())
                self._capture_installed = True
                log.info("change capture installed on %s.triples", schema)
            elif not self._warned_no_triples:
                self._warned_no_triples = True
                log.warning("schema %s has no triples table yet: no change capture", schema)

    async def _has_log(self, cur: psycopg.AsyncCursor[tuple[object, ...]]) -> bool:
        await cur.execute("SELECT to_regclass(%s)", (LOG_TABLE,))
        row = await cur.fetchone()
        return bool(row and row[0] is not None)

    async def _describe_view(
        self, cur: psycopg.AsyncCursor[tuple[object, ...]], oid: int
    ) -> _Relation:
        await cur.execute(
            "SELECT a.attname, a.atttypid, a.atttypmod FROM pg_attribute a "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        )
        columns = []
        for name, typid, typmod in await cur.fetchall():
            info = type_info(int(typid), int(typmod))  # type: ignore[call-overload]
            columns.append(ColumnDesc(str(name), info.oid, info.typlen, info.typmod))
        names = [c.name for c in columns]
        if self.config.key_column not in names:
            raise MzError(
                "42703", f"view {self.config.view} has no key column {self.config.key_column}"
            )
        select = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in names),
            sql.Identifier(self.config.view),
        )
        return _Relation(
            self.config.view, tuple(columns), select, names.index(self.config.key_column), oid=oid
        )

    async def _read(
        self,
        cur: psycopg.AsyncCursor[tuple[object, ...]],
        rel: _Relation,
        keys: Sequence[str] | None,
    ) -> list[Row]:
        rows: list[Row] = []
        batches: list[Sequence[str] | None] = [None]
        if keys is not None:
            batches = [keys[i : i + _KEY_BATCH] for i in range(0, len(keys), _KEY_BATCH)]
        key_name = rel.columns[rel.key_index].name if rel.key_index is not None else ""
        # Equal values of this read's rows share one bytes object: most columns repeat
        # (a status, a store, a customer), and each object costs 33 bytes beside its
        # text (column values: 161 MB of 344 for 200,000 rows, before)
        seen: dict[bytes, bytes] = {}

        def same(value: bytes) -> bytes:
            return seen.setdefault(value, value)

        for batch in batches:
            if batch is None:
                await cur.execute(rel.select_sql)
            else:
                await cur.execute(
                    sql.SQL("{} WHERE {} = ANY(%s)").format(
                        rel.select_sql, sql.Identifier(key_name)
                    ),
                    (list(batch),),
                )
            # Rows are encoded for the wire once, here, as they are read: every
            # subscription then sends the same DataRow cells. Their COPY text is made on
            # first use (Row.copy_text, the same bytes): made here, it took 68 MB of 412
            # for 200,000 rows, for a format the producer never reads. Converted a chunk
            # at a time: all of them as Python strings at once added ~200 MB to the
            # load's peak (bench.emulator_memory).
            while chunk := await cur.fetchmany(_FETCH_CHUNK):
                for rec in chunk:
                    values = tuple([None if v is None else same(str(v).encode()) for v in rec])
                    rows.append(Row(values, encode_cells(values)))
        return rows

    def _apply(
        self,
        *,
        ts: int,
        view: _Relation | None,
        view_oid: int | None,
        reload: bool,
        full: bool,
        keys: set[str],
        view_rows: list[Row] | None,
        feed_rows: list[tuple[_Relation, list[Row]]],
    ) -> None:
        old = self._view
        if old is not None and old.collection is not None and (view_oid is None or reload):
            dropped = errors.dependency_dropped(f"materialize.public.{old.name}")
            for sub in list(old.subscribers):
                sub.retire(dropped)
            old.subscribers.clear()
            old.collection = None
            log.warning("view %s was dropped; subscriptions terminated", old.name)
        if view_oid is None:
            self._view = None
        elif reload:
            assert view is not None and view_rows is not None and view.key_index is not None
            key_index = view.key_index
            coll = Collection(lambda row: row.values[key_index])
            coll.load(view_rows, ts)
            view.collection = coll
            self._view = view
            # Move the new arrangement out of the cyclic collector's sight: it holds no
            # cycles, and scanning it would cost more than streaming it.
            gc.freeze()
            log.info("loaded view %s: %d rows at %d", view.name, len(view_rows), ts)
        elif view is not None and view.collection is not None:
            coll = view.collection
            updates: list[Update] = []
            made = [] if full else self._synthetic_rows(view, ts, keys)
            if view_rows is not None or made:
                if full:
                    touched: set[object] = set(coll.by_key)
                else:
                    touched = {k.encode() for k in keys}
                    touched.update(row.values[view.key_index] for row in made)  # type: ignore[index]
                updates = coll.replace(touched, [*(view_rows or ()), *made], ts)
                if view_rows is not None and len(view_rows) > 10_000:
                    gc.freeze()
            else:
                coll.advance(ts)
            coll.compact(ts + 1 - self.config.retain_ms)
            self._fan_out(view, ts, updates)
        for feed, rows in feed_rows:
            if feed.collection is None:
                coll = Collection(lambda _row: None)
                coll.load(rows, ts)
                feed.collection = coll
                for sub in list(feed.subscribers):
                    self._activate_feed_sub(feed, sub)
            else:
                feed_updates = feed.collection.replace([None], rows, ts)
                feed.collection.compact(ts)
                self._fan_out(feed, ts, feed_updates)
        for feed in self._feeds:
            if feed.collection is not None and all(feed is not f for f, _ in feed_rows):
                feed.collection.advance(ts)
                feed.collection.compact(ts)
                self._fan_out(feed, ts, [])

    def _synthetic_rows(self, view: _Relation, ts: int, keys: set[str]) -> list[Row]:
        """MZEMU_SYNTHETIC_RATE's rows for this tick (devstack.mzemu.synthetic)."""
        rate = self.synthetic_rate
        if view.collection is None or (rate <= 0 and self._synthetic is None):
            return []
        if self._synthetic is None:
            names = [column.name for column in view.columns]
            column = self.config.synthetic_column
            if column not in names:
                raise MzError("42703", f"MZEMU_SYNTHETIC_COLUMN: {view.name} has no {column}")
            self._synthetic = SyntheticChanges(rate, names.index(column))
        if self._synthetic.rate != rate:  # counted afresh from now: no burst of what was due
            self._synthetic.set_rate(rate, ts)
        if rate <= 0:
            return []
        return self._synthetic.rows(view.collection.by_key, ts, {k.encode() for k in keys})

    def _fan_out(self, rel: _Relation, ts: int, updates: list[Update]) -> None:
        coll = rel.collection
        assert coll is not None
        for sub in list(rel.subscribers):
            if not sub.active:
                if coll.upper > sub.spec.as_of:
                    sub.activate(coll)
            else:
                sub.on_tick(ts, updates, coll.upper)
            if sub.done:
                rel.subscribers.discard(sub)

    # -- planning and starting subscriptions
    async def plan(self, stmt: Subscribe) -> Plan:
        """Describe a SUBSCRIBE: resolve its relation and output columns.

        Raises MzError for an unknown relation or key column.
        """
        query: str | None = None
        name = stmt.relation
        if stmt.query:
            simple = stmt.query.strip().rstrip(";").split()
            lowered = [w.lower() for w in simple]
            if lowered[:3] == ["select", "*", "from"] and len(lowered) == 4:
                name = simple[3].split(".")[-1].strip('"').lower()
            elif lowered[:1] == ["table"] and len(lowered) == 2:
                name = simple[1].split(".")[-1].strip('"').lower()
            else:
                query = stmt.query
        view = self._view
        if query is None and view is not None and name == view.name and view.collection:
            columns = view.columns
        else:
            if query is None:
                query = f"SELECT * FROM {sql.Identifier(name).as_string()}"
                if not await self._relation_exists(name):
                    raise errors.unknown_item(name)
            columns = await self._describe_query(query)
        key_indexes: tuple[int, ...] | None = None
        if stmt.upsert_key is not None:
            names = [c.name for c in columns]
            missing = [k for k in stmt.upsert_key if k not in names]
            if missing:
                raise MzError("42703", f'column "{missing[0]}" does not exist')
            key_indexes = tuple(names.index(k) for k in stmt.upsert_key)
        return Plan(stmt, OutputLayout(columns, stmt.progress, key_indexes), query)

    async def _relation_exists(self, name: str) -> bool:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise MzError("08006", "the emulator lost its PostgreSQL connection")
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT to_regclass(%s)", (sql.Identifier(name).as_string(),)
                )
                row = await cur.fetchone()
        return bool(row and row[0] is not None)

    async def _describe_query(self, query: str) -> tuple[ColumnDesc, ...]:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise MzError("08006", "the emulator lost its PostgreSQL connection")
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(sql.SQL(query))
                    )
                    description = cur.description or []
            except psycopg.Error as exc:
                diag = exc.diag
                raise MzError(diag.sqlstate or "XX000", diag.message_primary or str(exc)) from exc
        return tuple(
            ColumnDesc(col.name, col.type_code, type_info(col.type_code).typlen, -1)
            for col in description
        )

    def subscribe(
        self, plan: Plan, params: tuple[str | None, ...] = ()
    ) -> tuple[Subscription, list[Notice]]:
        """Start a planned subscription now (a cursor's first FETCH, a COPY).

        Raises MzError for an AS OF below the retained history, UP TO < AS OF, or a
        view that disappeared since it was planned. A query subscription resolves
        its timestamps at the next tick (its first evaluation) and reports such
        errors through the subscription instead.
        """
        stmt = plan.statement
        notices: list[Notice] = []
        if plan.query is not None:
            feed = _Relation(
                "query",
                plan.layout.relation,
                _text_select(plan.query, len(plan.layout.relation)),
                None,
            )
            placeholder = SubscribeSpec(0, None, stmt.snapshot, stmt.progress)
            sub = Subscription(plan.layout, placeholder, self.config.max_buffered_bytes)
            self._pending[sub] = (stmt, params)
            feed.subscribers.add(sub)
            self._feeds.append(feed)
            self._wakeup.set()
            return sub, notices
        view = self._view
        if view is None or view.collection is None:
            raise errors.unknown_item(stmt.relation or self.config.view)
        coll = view.collection
        spec = self._spec(stmt, coll.since, params, self.closed_ts)
        if spec.up_to is not None and spec.up_to == spec.as_of:
            notices.append(errors.equal_subscribe_bounds(spec.as_of))
        sub = Subscription(plan.layout, spec, self.config.max_buffered_bytes)
        if coll.upper > spec.as_of:
            sub.activate(coll)
        if not sub.done:
            view.subscribers.add(sub)
        return sub, notices

    def _spec(
        self,
        stmt: Subscribe,
        since: int,
        params: tuple[str | None, ...],
        latest: int,
    ) -> SubscribeSpec:
        """Resolve AS OF / UP TO against a collection readable from ``since``.

        Without AS OF the subscription starts at ``latest`` (the newest closed
        time); ``AS OF AT LEAST`` moves up to ``since``; a plain ``AS OF`` below it
        fails like Materialize's timestamp selection.
        """
        now = self.closed_ts
        if stmt.as_of is None:
            as_of = latest
        else:
            requested = stmt.as_of.evaluate(now, params)
            if stmt.as_of_at_least:
                as_of = max(requested, since)
            elif requested < since:
                raise errors.impossible_timestamp(requested, since, _COLLECTION_ID)
            else:
                as_of = requested
        up_to = stmt.up_to.evaluate(now, params) if stmt.up_to is not None else None
        if up_to is not None and up_to < as_of:
            raise errors.absurd_subscribe_bounds(as_of, up_to)
        return SubscribeSpec(as_of, up_to, stmt.snapshot, stmt.progress)

    def _activate_feed_sub(self, feed: _Relation, sub: Subscription) -> None:
        coll = feed.collection
        assert coll is not None
        stmt, params = self._pending.pop(sub, (None, ()))
        if stmt is None:
            return
        try:
            sub.spec = self._spec(stmt, coll.since, params, coll.upper - 1)
        except MzError as err:
            sub.retire(err)
            feed.subscribers.discard(sub)
            return
        sub.activate(coll)
        if sub.done:
            feed.subscribers.discard(sub)

    def stop(self, sub: Subscription) -> None:
        """Detach a subscription (cursor closed, transaction ended, client gone)."""
        sub.done = True
        self._pending.pop(sub, None)
        if self._view is not None:
            self._view.subscribers.discard(sub)
        for feed in list(self._feeds):
            feed.subscribers.discard(sub)
            if not feed.subscribers:
                self._feeds.remove(feed)


def _text_select(query: str, ncols: int) -> sql.Composed:
    aliases = [f"c{i}" for i in range(ncols)]
    return sql.SQL("SELECT {} FROM ({}) AS q({})").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(a)) for a in aliases),
        sql.SQL(query),
        sql.SQL(", ").join(sql.Identifier(a) for a in aliases),
    )
