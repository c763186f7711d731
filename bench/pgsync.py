"""Benchmark: PGSync, a peer, beside searchsync on the same machine in the same run.

    .venv/bin/python -m bench.pgsync [--orders 200000] [--changes-per-s 1000]
                                     [--seconds 60] [--pgsync-setting NAME=VALUE]…
                                     [--quick] [--save]

PGSync (PyPI, pinned in bench/pgsync-constraints.txt) runs from its own virtualenv,
``.venv-pgsync``, made here when missing or when the pins change (its dependencies
clash with the project's). It syncs *tables*, not a view of triples: its source is a
flat ``orders`` table with the view's 18 columns, made from a seeded FreshMart schema
with ``CREATE TABLE … AS SELECT`` from orders_search_source_mv (one row per order:
where the view gives an order two rows, for two delivery tasks, the first by task
status is kept) plus a primary key — the simplest schema that carries the same
documents. It writes them to its own index on the devstack's OpenSearch node, with a
private redis-server for its queue, the devstack's PostgreSQL (its triggers, functions
and replication slot in the private schema and torn down afterwards).

1. Initial sync: from the start of PGSync's ``bootstrap`` (triggers, replication slot)
   through ``pgsync --daemon``'s first full sync, until ``_count`` on its index equals
   the table's rows (what ``_search`` sees). Ours: ``bench.drain`` (the view's
   snapshot waiting in the emulator → all of it searchable) with as many orders, run
   right after as a subprocess.
2. Change propagation: ``--changes-per-s`` single-row UPDATE transactions a second on
   the flat table (order_status and effective_updated_at) for ``--seconds``; COMMIT →
   ``_search`` (an ids query) sees the new effective_updated_at, for a sample of them.
   Ours: ``bench.e2e --rates R --seconds S`` (its writer changes the *triples*, the
   view recomputes the order, and the emulator ticks every second), as a subprocess.

Measured here (``--quick``, 100 changes/s): with its defaults PGSync's producer thread
pushes the trigger notifications it LISTENs to into Redis only when
REDIS_WRITE_CHUNK_SIZE (500) have gathered or POLL_TIMEOUT (0.1 s) passes with none,
so under a steady load below ~5,000 changes/s a change waits for the chunk to fill
(p50 ~3.7 s by id); ``--pgsync-setting REDIS_WRITE_CHUNK_SIZE=1`` removes that wait
(p50 ~0.1 s by id) for about five times PGSync's CPU. Retrievable by id (``mget``,
real time) is reported beside searchable, so the refresh's share shows. At 1,000
changes/s (20,000 orders) the same writer reached 999/s on the table alone, 479/s
once PGSync's triggers were in place (its daemon not running: the trigger and its
NOTIFY at every COMMIT) and 352/s with PGSync running; ``writer_alone_per_s`` and
``limit`` say so in each run.

CPU seconds and max RSS of PGSync's processes come from bench.processes.Sampler
(PostgreSQL's work for its triggers and queries is not in them).
If PGSync cannot be installed or run, the last line is a JSON object with ``error``
and the exit status is 1: no figure is made up. Otherwise the last line is one JSON
object: PGSync's figures in the common fields, searchsync's as ``baseline`` (``ratio``
= PGSync / searchsync docs/s), everything else beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from opensearchpy import AsyncOpenSearch
from psycopg import sql

from bench.e2e import latency, writer_connections
from bench.processes import Sampler, children_of
from bench.saved import common_arguments, emit
from devstack.env import devstack_env
from devstack.harness.mzemu import drop_schema, pg_dsn
from devstack.harness.producer import PYTHON, REPO, seed_schema
from devstack.harness.services import PrivateRedis

__all__ = ["PgsyncError", "ensure_venv", "main", "reached"]

VENV = REPO / ".venv-pgsync"
PINS = Path(__file__).resolve().parent / "pgsync-constraints.txt"
STAMP = VENV / "pins.sha256"  # the pins the virtualenv was made from
COLUMNS = (
    "order_id", "order_number", "order_status", "store_id", "customer_id",
    "delivery_window_start", "delivery_window_end", "order_total_amount", "customer_name",
    "customer_email", "customer_address", "store_name", "store_zone", "store_address",
    "assigned_courier_id", "delivery_task_status", "delivery_eta", "effective_updated_at",
)  # fmt: skip
STATUSES = ("placed", "picking", "packed", "out_for_delivery", "delivered")
TRACKED_PER_S = 50.0  # changes a second followed for latency, as bench.e2e does
REFRESH_INTERVAL = "1s"  # the consumers' OS_REFRESH_INTERVAL default, set on PGSync's index too
DRAIN_FIELDS = ("events", "seconds", "events_per_s", "max_rss_mb", "processes")
RATE_FIELDS = (
    "offered_per_s", "achieved_per_s", "changes", "seconds", "searchable",
    "retrievable_by_id", "never_searchable_within_30s", "limit", "processes",
)  # fmt: skip
TAIL_SECONDS = 30.0  # after the writer stops, how long a tracked change may still take


class PgsyncError(RuntimeError):
    """PGSync could not be installed or run; the message carries its own error output."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(argv: list[str], what: str, timeout: float, **kwargs: Any) -> str:
    """Run ``argv``; its stdout. Raises PgsyncError with its output if it fails or hangs."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except subprocess.TimeoutExpired as exc:
        raise PgsyncError(f"{what}: no end after {timeout:.0f}s: {exc.stderr!r}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-3000:]
        raise PgsyncError(f"{what} exited {done.returncode}: {tail}")
    return str(done.stdout)


def ensure_venv() -> tuple[Path, float]:
    """PGSync's virtualenv (made when missing or when the pins changed) and seconds spent.

    Serialised by a lock file, so two runs never build it at once. Timeout: 15 minutes
    for the install. Raises PgsyncError with pip's output when it cannot be made.
    """
    digest = hashlib.sha256(PINS.read_bytes()).hexdigest()
    started = time.monotonic()
    VENV.parent.mkdir(exist_ok=True)
    with open(REPO / ".venv-pgsync.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text().strip() == digest:
            return VENV, 0.0
        say(f"making {VENV.name} from {PINS.name} (pip install from PyPI, a minute or more)")
        # the interpreter the project's .venv was made from (PGSync needs >= 3.10)
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", "--clear", str(VENV)], "python -m venv", 300)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        _run([*pip, "--no-deps", "-r", str(PINS)], "pip install of PGSync's pins", 900)
        _run([str(VENV / "bin" / "python"), "-m", "pip", "check"], "pip check", 120)
        STAMP.write_text(digest + "\n")
    return VENV, time.monotonic() - started


def reached(indexed: str | None, written: dt.datetime) -> bool:
    """Whether the document's ``effective_updated_at`` (PGSync's ISO text) shows ``written``.

    A later change of the same order also counts: it carries a later timestamp.
    """
    if indexed is None:
        return False
    return dt.datetime.fromisoformat(indexed) >= written


@dataclass
class Settings:
    """Where PGSync connects: the devstack's PostgreSQL and OpenSearch, a private Redis."""

    pg: dict[str, Any]
    os_host: str
    os_port: int
    redis_port: int
    workdir: Path
    overrides: dict[str, str] = field(default_factory=dict)  # --pgsync-setting

    def env(self) -> dict[str, str]:
        pg = self.pg
        values = {
            "OPENSEARCH": "true",
            "ELASTICSEARCH": "false",
            "ELASTICSEARCH_HOST": self.os_host,
            "ELASTICSEARCH_PORT": str(self.os_port),
            "PG_HOST": str(pg.get("host", "127.0.0.1")),
            "PG_PORT": str(pg.get("port", 5432)),
            "PG_USER": str(pg.get("user", "postgres")),
            "PG_DATABASE": str(pg["dbname"]),
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis_port),
            "CHECKPOINT_PATH": str(self.workdir),
            "CONSOLE_LOGGING_HANDLER_MIN_LEVEL": "WARNING",
        }
        if pg.get("password"):
            values["PG_PASSWORD"] = str(pg["password"])
        # PGSync reads every setting from the environment (and a .env in its cwd, the
        # workdir, which has none): nothing of ours may leak into it
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
        return {**keep, **values, **self.overrides}


def schema_config(database: str, schema: str, index: str) -> list[dict[str, Any]]:
    """PGSync's schema.json: one root node, the flat table, every column, no children."""
    return [
        {
            "database": database,
            "index": index,
            "setting": {"refresh_interval": REFRESH_INTERVAL, "number_of_replicas": 0},
            "nodes": {"table": "orders", "schema": schema, "columns": list(COLUMNS)},
        }
    ]


def make_flat_table(schema: str) -> tuple[int, int]:
    """``<schema>.orders`` from the view, one row per order; (its rows, the view's rows)."""
    view, table = (
        sql.Identifier(schema, "orders_search_source_mv"),
        sql.Identifier(schema, "orders"),
    )
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} AS SELECT DISTINCT ON (order_id) * FROM {} "
                "ORDER BY order_id, delivery_task_status"
            ).format(table, view)
        )
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (order_id)").format(table))
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        view_rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(view)).fetchone()
    return int(rows[0]) if rows else 0, int(view_rows[0]) if view_rows else 0


@dataclass
class Pgsync:
    """PGSync's processes for one run: bootstrap, the daemon, teardown."""

    bin: Path
    settings: Settings
    config: Path
    daemon: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)  # what the sampler reads

    def log(self) -> str:
        return (self.settings.workdir / "pgsync.log").read_text(errors="replace")[-3000:]

    def bootstrap(self, teardown: bool = False) -> None:
        """``bootstrap [--teardown]``. Timeout 300 s; raises PgsyncError with its output."""
        argv = [str(self.bin / "bootstrap"), "--config", str(self.config)]
        argv += ["--teardown"] if teardown else []
        proc = subprocess.Popen(
            argv, cwd=self.settings.workdir, env=self.settings.env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.pids[:] = [proc.pid]
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise PgsyncError("bootstrap: no end after 300s") from exc
        if proc.returncode != 0:
            what = "bootstrap --teardown" if teardown else "bootstrap"
            raise PgsyncError(f"{what} exited {proc.returncode}: {out.decode()[-3000:]}")

    def start(self) -> None:
        log = (self.settings.workdir / "pgsync.log").open("wb")
        self.daemon = subprocess.Popen(
            [str(self.bin / "pgsync"), "--config", str(self.config), "--daemon"],
            cwd=self.settings.workdir, env=self.settings.env(), stdout=log, stderr=log,
        )  # fmt: skip
        self.pids[:] = [self.daemon.pid]

    def check(self) -> None:
        """Raises PgsyncError with its log if the daemon has exited."""
        if self.daemon is not None and self.daemon.poll() is not None:
            raise PgsyncError(f"pgsync --daemon exited {self.daemon.returncode}: {self.log()}")

    def stop(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.terminate()
        try:
            self.daemon.wait(20)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait(10)


async def count(search: AsyncOpenSearch, index: str) -> int:
    try:
        return int((await search.count(index=index))["count"])
    except Exception:  # PGSync creates its index when its sync starts
        return 0


async def initial_sync(
    pgsync: Pgsync, search: AsyncOpenSearch, index: str, *, rows: int, sampler: Sampler,
    max_seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """bootstrap, then the daemon, until ``_count`` equals ``rows``."""
    sampler.sample()
    clock = time.monotonic()
    await asyncio.to_thread(pgsync.bootstrap)
    sampler.sample()
    bootstrapped = time.monotonic() - clock
    pgsync.start()
    seen, sampled = 0, 0.0
    while seen < rows:
        pgsync.check()
        if time.monotonic() - clock > max_seconds:
            raise PgsyncError(f"{seen:,} of {rows:,} searchable after {max_seconds:.0f}s: "
                              f"{pgsync.log()}")  # fmt: skip
        await asyncio.sleep(0.05)
        seen = await count(search, index)
        if time.monotonic() - sampled >= 1:
            sampled = time.monotonic()
            sampler.sample()
    seconds = time.monotonic() - clock
    sampler.sample()
    say(f"PGSync: {rows:,} rows searchable {seconds:.1f}s after bootstrap started "
        f"(bootstrap {bootstrapped:.1f}s)")  # fmt: skip
    return {
        "events": rows,
        "seconds": round(seconds, 2),
        "events_per_s": round(rows / seconds, 1),
        "bootstrap_seconds": round(bootstrapped, 2),
        # the daemon's full sync alone (bootstrap is a one-off per deployment)
        "sync_events_per_s": round(rows / (seconds - bootstrapped), 1),
        "processes": sampler.window(),
    }


@dataclass
class ChangeTracker:
    """Tracked changes: sequence → (order id, the effective_updated_at written, commit time)."""

    search: AsyncOpenSearch
    index: str
    pending: dict[int, tuple[str, dt.datetime, float]] = field(default_factory=dict)
    searchable: list[float] = field(default_factory=list)
    retrievable: list[float] = field(default_factory=list)
    _retrieved: set[int] = field(default_factory=set)

    async def poll(self) -> None:
        """One ``_search`` (ids query) and one ``mget`` for every pending order.

        ``mget`` is real time (no refresh needed): the gap between the two is the
        index's refresh, the rest is PGSync's own path.
        """
        if not self.pending:
            return
        ids = sorted({order for order, _, _ in self.pending.values()})
        body = {"size": len(ids), "query": {"ids": {"values": ids}},
                "_source": ["effective_updated_at"]}  # fmt: skip
        hits = (await self.search.search(index=self.index, body=body))["hits"]["hits"]
        docs = (
            await self.search.mget(
                index=self.index, body={"ids": ids},
                params={"_source_includes": "effective_updated_at"},
            )
        )["docs"]  # fmt: skip
        seen = time.time()
        searched = {h["_id"]: h["_source"].get("effective_updated_at") for h in hits}
        by_id = {d["_id"]: d["_source"].get("effective_updated_at") for d in docs if d.get("found")}
        for seq, (order, written, committed) in list(self.pending.items()):
            hit = reached(searched.get(order), written)
            if seq not in self._retrieved and (hit or reached(by_id.get(order), written)):
                self._retrieved.add(seq)
                self.retrievable.append(seen - committed)
            if hit:
                self.searchable.append(seen - committed)
                del self.pending[seq]


Committed = Callable[[int, str, dt.datetime, float], None]  # seq, order, written, commit time


async def write(
    table: sql.Composable, orders: list[str], *, rate: float, seconds: float, on_commit: Committed
) -> tuple[int, float]:
    """``rate`` single-row UPDATE transactions a second for ``seconds`` (order_status and
    effective_updated_at = the time it is sent), over as many connections as bench.e2e's
    writer uses at that rate; (changes committed, seconds they took)."""
    total = int(rate * seconds)
    statement = sql.SQL(
        "UPDATE {} SET order_status = %s, effective_updated_at = %s WHERE order_id = %s"
    ).format(table)
    picker = random.Random(5)
    plan = [(picker.choice(orders), picker.choice(STATUSES)) for _ in range(total)]
    connections = min(writer_connections(rate), max(1, total))
    links = [
        await psycopg.AsyncConnection.connect(pg_dsn(), autocommit=True) for _ in range(connections)
    ]
    start = time.monotonic()

    async def writer(first: int) -> None:
        conn = links[first]
        for seq in range(first, total, connections):
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            order, status = plan[seq]
            written = dt.datetime.now(dt.UTC)
            await conn.execute(statement, (status, written, order))
            on_commit(seq, order, written, time.time())

    try:
        await asyncio.gather(*(writer(n) for n in range(connections)))
    finally:
        for conn in links:
            await conn.close()
    return total, time.monotonic() - start


async def changes(
    table: sql.Composable, orders: list[str], search: AsyncOpenSearch, index: str, *,
    rate: float, seconds: float, check: Callable[[], None], sampler: Sampler,
) -> dict[str, Any]:  # fmt: skip
    """``rate`` single-row UPDATEs a second for ``seconds``; COMMIT → searchable."""
    tracker = ChangeTracker(search, index)
    every = max(1, round(rate / TRACKED_PER_S))

    def track(seq: int, order: str, written: dt.datetime, at: float) -> None:
        if seq % every == 0:
            tracker.pending[seq] = (order, written, at)

    writers = asyncio.ensure_future(
        write(table, orders, rate=rate, seconds=seconds, on_commit=track)
    )
    sampler.sample()
    sampled = time.monotonic()
    while not writers.done():
        check()
        await tracker.poll()
        await asyncio.sleep(0.1)
        if time.monotonic() - sampled >= 1:
            sampled = time.monotonic()
            sampler.sample()
    committed, took = await writers
    tail_until = time.monotonic() + TAIL_SECONDS
    while tracker.pending and time.monotonic() < tail_until:
        check()
        await tracker.poll()
        await asyncio.sleep(0.1)
    sampler.sample()
    searchable = latency(tracker.searchable)
    result: dict[str, Any] = {
        "offered_per_s": rate,
        "achieved_per_s": round(committed / took, 1),
        "changes": committed,
        "seconds": round(took, 1),
        "searchable": searchable,
        "retrievable_by_id": latency(tracker.retrievable),
        "never_searchable_within_30s": len(tracker.pending),
        "tracked_every": every,
        "writer_connections": min(writer_connections(rate), max(1, committed)),
        "processes": sampler.window(),
    }
    say(f"PGSync: {result['achieved_per_s']:,}/s changes, searchable p95 "
        f"{searchable['p95_ms']} ms, never searchable {len(tracker.pending)}")  # fmt: skip
    return result


async def writer_alone(
    table: sql.Composable, orders: list[str], rate: float, seconds: float
) -> float:
    """The writer's own rate on the flat table before PGSync's triggers exist (changes/s):
    whether a shortfall later is the writer's or comes with the triggers (their NOTIFY
    takes a database-wide lock at every COMMIT)."""

    def nothing(seq: int, order: str, written: dt.datetime, at: float) -> None:
        return None

    committed, took = await write(table, orders, rate=rate, seconds=seconds, on_commit=nothing)
    say(f"writer alone (no triggers): {committed / took:,.1f}/s of {rate:,.0f}/s offered")
    return round(committed / took, 1)


def limit_of(achieved: float, alone: float, offered: float) -> str | None:
    """What held the change rate below 90 % of the offered one, if anything."""
    if achieved >= 0.9 * offered:
        return None
    if alone < 0.9 * offered:
        return "writer (it falls short without PGSync's triggers too)"
    return (
        "with PGSync running (its triggers' NOTIFY at every COMMIT, its CPU share): "
        "the writer alone reached the offered rate"
    )


def leftovers(schema: str, slot: str) -> dict[str, int]:
    """PGSync's replication slot and triggers still in PostgreSQL (after its teardown)."""
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        slots = conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND NOT t.tgisinternal",
            (schema,),
        ).fetchone()
    return {"replication_slots": int(slots[0]) if slots else 0,
            "triggers": int(triggers[0]) if triggers else 0}  # fmt: skip


def drop_slot(slot: str) -> None:
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        )


async def clean_up(
    pgsync: Pgsync | None, search: AsyncOpenSearch, index: str, schema: str, slot: str
) -> dict[str, Any]:
    """Stop PGSync, tear down its triggers and slot, check, drop its index and the schema."""
    cleanup: dict[str, Any] = {}
    if pgsync is not None:
        pgsync.stop()
        try:
            await asyncio.to_thread(pgsync.bootstrap, True)
        except PgsyncError as exc:
            cleanup["teardown_error"] = str(exc)
    cleanup["left_after_teardown"] = await asyncio.to_thread(leftovers, schema, slot)
    await asyncio.to_thread(drop_slot, slot)  # if the teardown left it: never keep WAL
    with suppress(Exception):
        await search.indices.delete(index=index, ignore_unavailable=True)
    await search.close()
    await asyncio.to_thread(drop_schema, schema)
    return cleanup


def drop_stale_slots(database: str) -> list[str]:
    """Slots of earlier runs killed before their teardown (their schema is gone): dropped,
    since an abandoned slot makes PostgreSQL keep WAL for ever."""
    prefix = f"{database.lower()}_pgsync_"
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE NOT active AND "
            "starts_with(slot_name, %s) AND NOT EXISTS (SELECT 1 FROM pg_namespace "
            "WHERE nspname = substr(slot_name, length(%s) + 1))",
            (prefix, prefix),
        ).fetchall()
        for (slot,) in rows:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return [str(slot) for (slot,) in rows]


async def run_pgsync(args: argparse.Namespace) -> dict[str, Any]:
    """Install PGSync, seed, sync, change, tear down: PGSync's figures."""
    venv, install_seconds = await asyncio.to_thread(ensure_venv)
    version = _run([str(venv / "bin" / "pgsync"), "--version"], "pgsync --version", 120)
    env = devstack_env()
    pg = psycopg.conninfo.conninfo_to_dict(pg_dsn())
    stale = await asyncio.to_thread(drop_stale_slots, str(pg["dbname"]))
    if stale:
        say(f"dropped replication slots of killed earlier runs: {', '.join(stale)}")
    started = time.monotonic()
    schema = await asyncio.to_thread(seed_schema, args.orders)
    workdir = Path(tempfile.mkdtemp(prefix="bench-pgsync-"))
    redis = PrivateRedis(workdir / "redis")
    search = AsyncOpenSearch(
        hosts=[{"host": env.get("OS_HOST", "127.0.0.1"), "port": int(env.get("OS_PORT", "9200"))}],
        timeout=60,
    )
    index = f"pgsync_{schema}"
    database = str(pg["dbname"])
    slot = f"{database.lower()}_{index}"  # PGSync's name for it (sync.py, Sync.__name)
    pgsync: Pgsync | None = None
    try:
        (workdir / "redis").mkdir()
        rows, view_rows = await asyncio.to_thread(make_flat_table, schema)
        say(f"seeded {args.orders:,} orders, flat table of {rows:,} rows (view: {view_rows:,}) "
            f"in {time.monotonic() - started:.1f}s")  # fmt: skip
        redis.start()
        config = workdir / "schema.json"
        config.write_text(json.dumps(schema_config(database, schema, index), indent=1))
        settings = Settings(pg, env.get("OS_HOST", "127.0.0.1"), int(env.get("OS_PORT", "9200")),
                            redis.port, workdir, args.pgsync_settings)  # fmt: skip
        pgsync = Pgsync(venv / "bin", settings, config)
        sampler = Sampler()
        current = pgsync.pids
        sampler.add("pgsync", lambda: [p for pid in list(current) for p in children_of(pid)])
        redis_pid = redis.proc.pid if redis.proc else 0
        sampler.add("pgsync redis", lambda: [redis_pid])
        table = sql.Identifier(schema, "orders")
        with psycopg.connect(pg_dsn(), autocommit=True) as conn:
            ids = [r[0] for r in conn.execute(sql.SQL("SELECT order_id FROM {}").format(table))]
        alone = await writer_alone(table, ids, args.changes_per_s, min(args.seconds, 5.0))
        initial = await initial_sync(
            pgsync, search, index, rows=rows, sampler=sampler, max_seconds=args.max_seconds
        )
        propagation = await changes(
            table, ids, search, index, rate=args.changes_per_s, seconds=args.seconds,
            check=pgsync.check, sampler=sampler,
        )  # fmt: skip
    finally:
        cleanup = await clean_up(pgsync, search, index, schema, slot)
        redis.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "version": version.strip().removeprefix("Version: "),
        "venv_install_seconds": round(install_seconds, 1),
        "settings": args.pgsync_settings or "PGSync's defaults",
        "rows": rows,
        "view_rows": view_rows,
        "initial_sync": initial,
        "changes": {
            **propagation,
            "writer_alone_per_s": alone,
            "limit": limit_of(propagation["achieved_per_s"], alone, args.changes_per_s),
        },
        "cleanup": cleanup,
    }


def ours(module: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one of our benches as a subprocess; its JSON (last line of stdout)."""
    say(f"searchsync: python -m {module} {' '.join(argv)}")
    done = subprocess.run(
        [str(PYTHON), "-m", module, *argv], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{module} exited {done.returncode}: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    peer = await run_pgsync(args)
    drain = ours("bench.drain", args.drain_argv, 1800)
    e2e = ours("bench.e2e", args.e2e_argv, 1800)
    at_rate = e2e["rates"][0]
    initial, propagation = peer["initial_sync"], peer["changes"]
    searchable = propagation["searchable"]
    pgsync_processes = {**initial["processes"]}
    return {
        "scenario": "pgsync_peer",
        "events": initial["events"],
        "seconds": initial["seconds"],
        "events_per_s": initial["events_per_s"],
        "p50_ms": searchable["p50_ms"],
        "p95_ms": searchable["p95_ms"],
        "p99_ms": searchable["p99_ms"],
        "max_rss_mb": max(
            s["max_rss_mb"] for w in (initial, propagation) for s in w["processes"].values()
        ),
        "baseline": {
            "what": "searchsync, bench.drain: the view's snapshot in the emulator → all "
            "searchable, as many orders, same run",
            "events": drain["events"],
            "seconds": drain["seconds"],
            "events_per_s": drain["events_per_s"],
            "raw_bulk_ceiling_per_s": drain.get("baseline", {}).get("events_per_s"),
        },
        "ratio": round(initial["events_per_s"] / drain["events_per_s"], 3),
        "pgsync": {**peer, "processes_initial_sync": pgsync_processes},
        "searchsync": {
            "initial_sync": {k: drain.get(k) for k in DRAIN_FIELDS},
            "changes": {k: at_rate.get(k) for k in RATE_FIELDS},
            "emulator_tick_ms": e2e.get("emulator_tick_ms"),
            "refresh_interval": e2e.get("refresh_interval"),
            "drain_command": "python -m bench.drain " + " ".join(args.drain_argv),
            "e2e_command": "python -m bench.e2e " + " ".join(args.e2e_argv),
        },
        "refresh_interval": REFRESH_INTERVAL,
        "note": "PGSync syncs a flat table (the view's columns copied, one row per order, "
        "primary key order_id) and its changes are single-row UPDATEs of that table; it "
        "does not read the view over the triples. searchsync syncs the view: its writer "
        "changes the triples and every change waits for the emulator's tick "
        "(emulator_tick_ms) before the producer sees it. Both indexes refresh every "
        f"{REFRESH_INTERVAL}; PGSync's mapping is its dynamic one, ours explicit. "
        "ratio = PGSync initial-sync docs/s / searchsync's (bench.drain)",
        "cpus": os.cpu_count(),
    }


def pgsync_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.pgsync", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--changes-per-s", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="of changes")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="for the initial sync")
    parser.add_argument(
        "--pgsync-setting", dest="pgsync_settings", action="append", default=[],
        type=pgsync_setting, metavar="NAME=VALUE",
        help="one of PGSync's environment settings for its run (e.g. REDIS_WRITE_CHUNK_SIZE=1)",
    )  # fmt: skip
    common_arguments(parser, "a smoke run of a few minutes")
    args = parser.parse_args(argv)
    args.pgsync_settings = dict(args.pgsync_settings)
    if args.quick:
        args.orders, args.changes_per_s, args.seconds = 3_000, 100.0, 10.0
    rate = f"{args.changes_per_s:g}"
    args.drain_argv = ["--orders", str(args.orders)]
    args.e2e_argv = ["--rates", rate, "--seconds", f"{args.seconds:g}"]
    if args.quick:
        args.drain_argv += ["--ceiling-connections", "1"]
        args.e2e_argv += ["--warmup", "2", "--orders", "3000", "--ceiling-events", "5000"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except PgsyncError as exc:
        say(f"bench.pgsync: PGSync could not run: {exc}")
        print(json.dumps({"scenario": "pgsync_peer", "error": str(exc)}))
        return 1
    emit(result, args, "bench.pgsync", argv or sys.argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
