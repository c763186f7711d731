"""``searchsync resync``'s I/O: gather the state, execute the plan's steps (common.resync).

Each step is idempotent and records its phase in Redis before it acts, so a run
killed anywhere is resumed by the next one (common.resync.plan reads the phase).
Every OpenSearch request waits at most the client's timeout, Redis commands the
client's; the waits that can last are bounded by ``confirm_timeout`` (consumers'
confirmations), the snapshot's size (the load) and ``settle`` (the verify).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import psycopg
from opensearchpy import AsyncOpenSearch, RequestError
from psycopg import sql
from redis.asyncio import Redis

from ..common import materialize
from ..common.config import Settings
from ..common.errors import SearchsyncError
from ..common.index import index_body, inspect_layout, resolve_replicas, write_index
from ..common.keys import Keys
from ..common.pipelines import execute_pipeline
from ..common.resync import (
    Facts,
    Phase,
    Plan,
    Record,
    Step,
    advanced,
    parse_record,
    unconfirmed,
)
from ..common.verify import Drift, compare, read_index, read_view
from ..common.views import view_properties
from ..consumer.membership import live_members
from .resync_load import Loaded, load_snapshot

__all__ = [
    "LOAD_GC_DELETES_SECONDS",
    "Context",
    "Report",
    "ResyncError",
    "command_lock",
    "execute",
    "gather",
]

# index.gc_deletes while the snapshot loads: a delete newer than T must keep refusing
# the snapshot's row for the key however long the load takes (then STREAM_RETENTION_SECONDS)
LOAD_GC_DELETES_SECONDS: Final = 86_400
_POLL_SECONDS: Final = 0.2


class ResyncError(SearchsyncError):
    """The resync stopped where it is recorded; the message says why and what to do."""


class Reporter(Protocol):
    """searchsync.cli.terminal.Progress's interface."""

    def note(self, line: str) -> None: ...

    def update(
        self, what: str, done: int, total: int | None = None, *, force: bool = False
    ) -> None: ...


# The command's lock: a second `searchsync resync` (a resume, an abort) waits for a killed
# one's lock to expire, and refuses while a live one renews it.
LOCK_TTL_MS: Final = 5000
_RENEW_SECONDS: Final = 1.0
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(slots=True)
class Lock:
    """This command's hold on ``resync:lock``; :attr:`lost` once another took it."""

    owner: str
    lost: bool = False


@contextlib.asynccontextmanager
async def command_lock(redis: Redis, keys: Keys, progress: Reporter) -> AsyncIterator[Lock]:
    """Hold ``resync:lock`` (renewed every second) for the ``with`` block.

    Waits up to LOCK_TTL_MS (+1 s) for a killed command's lock to expire. Raises
    :class:`ResyncError` when another command keeps it, redis errors.
    """
    lock = Lock(f"{socket.gethostname()}:{os.getpid()}")
    deadline = time.monotonic() + LOCK_TTL_MS / 1000 + 1
    told = False
    while not await redis.set(keys.resync_lock, lock.owner, nx=True, px=LOCK_TTL_MS):
        holder: Any = await redis.get(keys.resync_lock)
        name = holder.decode() if holder else "?"
        if time.monotonic() > deadline:
            raise ResyncError(f"another searchsync resync is running ({name}): let it finish")
        if not told:
            progress.note(f"waiting for the lock of searchsync resync {name} (gone if killed)")
            told = True
        await asyncio.sleep(0.25)
    renewing = asyncio.create_task(_renew(redis, keys, lock))
    try:
        yield lock
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await redis.eval(_RELEASE, 1, keys.resync_lock, lock.owner)


async def _renew(redis: Redis, keys: Keys, lock: Lock) -> None:
    while True:
        await asyncio.sleep(_RENEW_SECONDS)
        kept = await redis.eval(_RENEW, 1, keys.resync_lock, lock.owner, LOCK_TTL_MS)
        if not kept:
            lock.lost = True
            return


@dataclass(slots=True)
class Context:
    settings: Settings
    redis: Redis
    client: AsyncOpenSearch
    keys: Keys
    progress: Reporter
    confirm_timeout: float = 120.0
    settle: float = 30.0
    grace_seconds: float = 3600.0
    keep_old: bool = False
    lock: Lock | None = None


@dataclass(slots=True)
class Report:
    record: Record | None
    seconds: dict[str, float] = field(default_factory=dict)  # per step
    loaded: Loaded | None = None
    drift: Drift | None = None
    retired_until_ms: int | None = None  # when the old index may be deleted
    skipped: list[str] = field(default_factory=list)  # key violations the verify left out


async def gather(
    redis: Redis, client: AsyncOpenSearch, keys: Keys, alias: str
) -> tuple[Record | None, Facts]:
    """The recorded resync and what OpenSearch says (4 requests at most). Raises
    redis.exceptions.RedisError, opensearchpy.TransportError."""
    raw: Any = await redis.hgetall(keys.resync)
    layout = await inspect_layout(client, alias)
    rows = await client.cat.indices(
        index=f"{alias}_v*", format="json", h="index", expand_wildcards="all"
    )
    return parse_record(raw), Facts(layout, tuple(sorted(row["index"] for row in rows)))


async def execute(ctx: Context, plan: Plan, report: Report | None = None) -> Report:
    """Run ``plan``'s steps in order; ``report`` (a new one by default) says what was done
    and how long each step took, also when a step raised.

    Raises :class:`ResyncError` (the phase stays recorded: run again to resume, or
    abort), cli.resync_load.LoadError, psycopg.Error, redis and opensearchpy errors.
    """
    assert plan.record is not None
    report = report if report is not None else Report(plan.record)
    for step in plan.steps:
        if ctx.lock is not None and ctx.lock.lost:
            raise ResyncError("lost the resync lock to another command (paused too long?)")
        started = time.monotonic()
        assert report.record is not None
        report.record = await _STEPS[step](ctx, report.record, report)
        report.seconds[step.value] = round(time.monotonic() - started, 2)
    return report


async def _save(ctx: Context, record: Record) -> Record:
    await ctx.redis.hset(ctx.keys.resync, mapping=record.fields())  # type: ignore[arg-type]
    return record


async def _start(ctx: Context, record: Record, report: Report) -> Record:
    # HSETNX: two resyncs started at once must not both think they own the record
    if not await ctx.redis.hsetnx(ctx.keys.resync, "id", record.id):
        raise ResyncError("another resync was started meanwhile: run `searchsync resync` again")
    ctx.progress.note(f"resync {record.id}: {record.old} -> {record.target}")
    return await _save(ctx, record)


async def _create_target(ctx: Context, record: Record, report: Report) -> Record:
    retention = ctx.settings.stream_retention_seconds
    # OS_INDEX_REPLICAS; under auto at least as many as the live index has (an operator's
    # raise is kept). The project's mapping and settings otherwise.
    found: Any = await ctx.client.indices.get_settings(
        index=record.old, name="index.number_of_replicas", flat_settings=True
    )
    live = int(found[record.old]["settings"].get("index.number_of_replicas", 0))
    replicas = await resolve_replicas(ctx.client, ctx.settings.os_index_replicas, live)
    body = index_body(
        retention_seconds=max(retention, LOAD_GC_DELETES_SECONDS),
        replicas=replicas,
        refresh_interval="-1",
        properties=view_properties(ctx.settings),
    )
    try:
        await ctx.client.indices.create(index=record.target, body=body)
        ctx.progress.note(f"created {record.target}")
    except RequestError as error:
        if error.error != "resource_already_exists_exception":
            raise  # made by the run that was interrupted, else a real refusal
    await _move_write_alias(ctx, record, record.target)
    return record


async def _move_write_alias(ctx: Context, record: Record, index: str) -> None:
    """Point ``<alias>_resync`` at ``index`` alone, in one ``_aliases`` request.

    The name must always resolve once it exists: a delete-only ``_bulk`` with external
    versions auto-creates a missing index even with ``require_alias=true`` (measured on
    2.19.6), so a consumer a second late would make a concrete ``<alias>_resync``.
    """
    alias = record.write_alias
    holders: Any = {}
    if await ctx.client.indices.exists_alias(name=alias):
        holders = await ctx.client.indices.get_alias(name=alias)
    actions: list[dict[str, Any]] = [
        {"remove": {"index": name, "alias": alias}} for name in holders if name != index
    ]
    actions.append({"add": {"index": index, "alias": alias}})
    try:
        await ctx.client.indices.update_aliases(body={"actions": actions})
    except RequestError as error:
        if error.error != "invalid_alias_name_exception":
            raise
        raise ResyncError(
            f"a concrete index named {alias} exists (writes reached that name while it was no "
            f"alias): check and delete it (`curl -X DELETE /{alias}`), then run again"
        ) from None


async def _dual_write(ctx: Context, record: Record, report: Report) -> Record:
    return await _save(ctx, advanced(record, Phase.DUAL_WRITE))


async def _live_unconfirmed(ctx: Context, record: Record) -> list[str]:
    async with ctx.redis.pipeline(transaction=False) as pipe:
        pipe.zrange(ctx.keys.members, 0, -1, withscores=True)
        pipe.hgetall(ctx.keys.resync_confirmed)
        pipe.time()
        beats, confirmed, (seconds, micros) = await execute_pipeline(pipe)
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    heartbeats = {name.decode(): score for name, score in beats}
    live = live_members(heartbeats, now_ms, int(ctx.settings.lease_ttl_seconds * 1000))
    answers = {name.decode(): value.decode() for name, value in confirmed.items()}
    return unconfirmed(live, answers, record.id)


async def _wait_confirmed(ctx: Context, record: Record, report: Report) -> Record:
    started = time.monotonic()
    while missing := await _live_unconfirmed(ctx, record):
        waited = time.monotonic() - started
        if waited > ctx.confirm_timeout:
            raise ResyncError(
                f"consumer(s) {', '.join(missing)} did not confirm dual writes within "
                f"{ctx.confirm_timeout:.0f} s (an older searchsync, or stuck?); nothing was "
                f"loaded. Run `searchsync resync` again to keep waiting, or `searchsync resync "
                f"--abort`."
            )
        names = ", ".join(missing)
        ctx.progress.update(f"consumers not writing to both indexes yet ({names}):", len(missing))
        await asyncio.sleep(_POLL_SECONDS)
    ctx.progress.note("every live consumer writes to both indexes")
    return record


async def _load(ctx: Context, record: Record, report: Report) -> Record:
    raw: Any = await ctx.redis.zscore(ctx.keys.high_water, "ts")
    high_water = int(raw) if raw is not None else None
    record = await _save(ctx, advanced(record, Phase.LOADING, high_water=high_water))
    total: Any = (await ctx.client.count(index=record.old)).get("count")

    def progress(rows: int) -> None:
        ctx.progress.update(f"loading {record.target}", rows, total)

    loaded = await load_snapshot(
        ctx.settings,
        ctx.client,
        write_alias=record.write_alias,
        live_index=record.old,
        at_least=high_water,
        progress=progress,
    )
    report.loaded = loaded
    ctx.progress.note(
        f"loaded {loaded.rows} rows at T={loaded.as_of} (high-water mark {high_water}): "
        f"{loaded.written} written, {loaded.newer} already newer"
    )
    if loaded.rejected:
        raise ResyncError(
            f"{record.target} refused {loaded.rejected} documents "
            f"({'; '.join(loaded.rejected_sample[:3])}); nothing was swapped. Fix the "
            f"mapping, then `searchsync resync --abort` and start again."
        )
    return await _save(
        ctx, advanced(record, Phase.LOADING, as_of=loaded.as_of, loaded=loaded.written)
    )


async def _finish_load(ctx: Context, record: Record, report: Report) -> Record:
    settings = {
        "index.refresh_interval": ctx.settings.os_refresh_interval,
        "index.gc_deletes": f"{ctx.settings.stream_retention_seconds}s",
    }
    await ctx.client.indices.put_settings(index=record.target, body=settings)
    await ctx.client.indices.refresh(index=record.target)
    return record


async def _verify(ctx: Context, record: Record, report: Report) -> Record:
    record = await _save(ctx, advanced(record, Phase.VERIFYING))
    drift, skipped = await verify_index(ctx, record.target)
    report.drift, report.skipped = drift, sorted(skipped)
    if not drift.ok:
        # back to loading: the next run loads the snapshot again (which writes whatever a
        # rejected dual write left out) before it verifies again
        await _save(ctx, advanced(record, Phase.LOADING))
        sample = ", ".join(sorted(drift.keys)[:5])
        raise ResyncError(
            f"{record.target} differs from the view in {len(drift.keys)} documents after "
            f"settling {ctx.settle:.0f} s (e.g. {sample}); the alias was not moved. Run "
            f"`searchsync resync` again to load and verify again, or `searchsync resync "
            f"--abort`."
        )
    also = f" ({len(skipped)} keys with several rows not compared)" if skipped else ""
    ctx.progress.note(f"{record.target} matches the view: {drift.index_count} documents{also}")
    return record


async def verify_index(ctx: Context, index: str) -> tuple[Drift, set[str]]:
    """The view against ``index``, differing keys re-read for up to ``ctx.settle`` s, and
    the keys left out: those with several rows in the view (key violations), whose
    document the live index keeps as it was (so does the new one: cli.resync_load).
    Raises psycopg.Error, opensearchpy.TransportError."""
    settings = ctx.settings
    conn = await materialize.connect(settings, application_name="searchsync-resync")
    view, key = settings.view_name, settings.key_column
    try:
        drift = compare(await read_view(conn, view, key), await read_index(ctx.client, index, key))
        skipped = await _several_rows(conn, view, key, drift.keys) if not drift.ok else set()
        drift = _without(drift, skipped)
        waited = 0.0
        while not drift.ok and waited < ctx.settle:
            await asyncio.sleep(1.0)
            waited += 1.0
            keys = sorted(drift.keys)
            again = compare(
                await read_view(conn, view, key, keys),
                await read_index(ctx.client, index, key, keys),
            )
            drift = Drift(
                drift.view_count, drift.index_count, again.missing, again.extra, again.different
            )
    finally:
        await conn.close()
    return drift, skipped


async def _several_rows(
    conn: psycopg.AsyncConnection[Any], view: str, key: str, keys: Collection[str]
) -> set[str]:
    query = sql.SQL("SELECT {k} FROM {v} WHERE {k} = ANY(%s) GROUP BY {k} HAVING count(*) > 1")
    async with conn.cursor() as cur:
        statement = query.format(k=sql.Identifier(key), v=sql.Identifier(view))
        await cur.execute(statement, (sorted(keys),))
        return {str(row[0]) for row in await cur.fetchall()}


def _without(drift: Drift, keys: Collection[str]) -> Drift:
    return Drift(
        drift.view_count,
        drift.index_count,
        [k for k in drift.missing if k not in keys],
        [k for k in drift.extra if k not in keys],
        {k: v for k, v in drift.different.items() if k not in keys},
    )


async def _swap(ctx: Context, record: Record, report: Report) -> Record:
    record = await _save(ctx, advanced(record, Phase.SWAPPING))
    actions: list[dict[str, Any]] = [
        {"remove": {"index": record.old, "alias": record.alias}},
        {"add": {"index": record.target, "alias": record.alias, "is_write_index": True}},
    ]
    # <alias>_resync stays on the target, now live: late dual writes land there twice
    await ctx.client.indices.update_aliases(body={"actions": actions})
    ctx.progress.note(f"alias {record.alias} -> {record.target} (write index)")
    return record


async def _finish(ctx: Context, record: Record, report: Report) -> Record:
    seconds, micros = await ctx.redis.time()
    until = int(seconds) * 1000 + int(micros) // 1000 + int(ctx.grace_seconds * 1000)
    async with ctx.redis.pipeline(transaction=True) as pipe:
        if not ctx.keep_old:
            pipe.zadd(ctx.keys.retired, {record.old: until})
            report.retired_until_ms = until
        pipe.delete(ctx.keys.resync, ctx.keys.resync_confirmed)
        await execute_pipeline(pipe)
    return record


async def _delete_target(ctx: Context, record: Record, report: Report) -> Record:
    layout = await inspect_layout(ctx.client, record.alias)
    if record.target in layout.members:  # plan_abort checked it; the alias may have moved since
        raise ResyncError(f"{record.target} is behind the alias {record.alias}: not deleting it")
    # late dual writes must find the name (see _move_write_alias): the live index takes them
    await _move_write_alias(ctx, record, write_index(layout))
    await ctx.client.indices.delete(index=record.target, params={"ignore_unavailable": "true"})
    ctx.progress.note(f"deleted {record.target}")
    return record


async def _clear(ctx: Context, record: Record, report: Report) -> Record:
    await ctx.redis.delete(ctx.keys.resync, ctx.keys.resync_confirmed)
    return record


_STEPS: Final[dict[Step, Callable[[Context, Record, Report], Awaitable[Record]]]] = {
    Step.START: _start,
    Step.CREATE_TARGET: _create_target,
    Step.DUAL_WRITE: _dual_write,
    Step.WAIT_CONFIRMED: _wait_confirmed,
    Step.LOAD: _load,
    Step.FINISH_LOAD: _finish_load,
    Step.VERIFY: _verify,
    Step.SWAP: _swap,
    Step.FINISH: _finish,
    Step.DELETE_TARGET: _delete_target,
    Step.CLEAR: _clear,
}
