"""The demo behind ``scripts/demo``: the whole pipeline on the devstack, measured.

1. seed FreshMart (if the view is empty), start from clean searchsync state
   (``--keep-state`` skips that);
2. start a producer per view of the devstack's views file (devstack/views/views.toml:
   the orders view and the stores view, each into its own alias) and ``--consumers``
   consumers serving both, under supervisord, with the devstack's addresses: a copy of
   supervisord.conf in .devstack/pipeline/ with a ``[program:producer-<view>]`` per
   view and ``numprocs`` set to ``--consumers`` (its logs in .devstack/pipeline/run/);
3. wait until both snapshots are searchable; report how long it took;
4. run the load generator for ``--seconds`` at ``--rate`` changes/s and measure,
   for every change, PostgreSQL COMMIT → searchable (``_search`` finds the document
   with a ``sync_version`` at least the time the change was sent — its Materialize
   timestamp is not below its commit — or no longer finds it) and COMMIT →
   retrievable by id (``mget``, real time: it reads documents before a refresh
   publishes them to searches); latency counts from when COMMIT returned;
5. ``searchsync verify --view`` for each view (view vs index, every document) and
   ``searchsync status`` (every view);
6. on a terminal, a live view while the load keeps running (devstack.dashboard):
   events/s, buffer, lag and freshness per partition and the orders synced last,
   until Ctrl-C (or ``--live-seconds``); then a search command that finds the order
   changed last (``--no-live`` skips this step: plain output, for CI and logs);
7. stop the pipeline (``--keep-running`` leaves it up; ``devstack/down`` stops
   the services).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from opensearchpy import AsyncOpenSearch, NotFoundError
from redis.asyncio import Redis

from devstack import dashboard
from devstack.freshmart.schema import apply_schema_async
from devstack.searchable import Tracker
from searchsync.common.keys import Keys
from searchsync.common.views import CONFIG_VARIABLE, Deployment, deployment_or_exit

ROOT = Path(__file__).resolve().parent.parent
# a deployment of its own (supervisord.conf keeps its run/ next to itself), so the
# demo never touches a supervisord started from the checkout
DEPLOYMENT = ROOT / ".devstack" / "pipeline"
CONFIG = DEPLOYMENT / "supervisord.conf"
RUN_DIR = DEPLOYMENT / "run"
VIEW = "orders_search_source_mv"
INDEX = "orders"
# the views the demo syncs, each into its own alias (README "Several views")
VIEWS_FILE = ROOT / "devstack" / "views" / "views.toml"
BIN = ROOT / ".venv" / "bin"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def ensure_schema() -> None:
    """The FreshMart schema as devstack/sql has it now (idempotent): a devstack seeded
    before the stores view existed gets it."""
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_URL"]) as conn:
        await apply_schema_async(conn)


async def view_count(view: str = VIEW) -> int:
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_URL"]) as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {view}")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def reset_state(redis: Redis, client: AsyncOpenSearch, deployment: Deployment) -> None:
    cleared = 0
    for view in deployment.views:
        name = view.view_name
        # the view's keys in either key layout: searchsync:<view>:… and searchsync:{<view>…
        for pattern in (f"searchsync:{name}:*", "searchsync:{" + name + "[:}]*"):
            keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
            if keys:
                await redis.delete(*keys)
            cleared += len(keys)
        with contextlib.suppress(NotFoundError):
            await client.indices.delete(index=f"{view.os_index_name}_v*")
    aliases = ", ".join(view.os_index_name for view in deployment.views)
    say(f"cleared {cleared} Redis keys and the {aliases} indices: starting from scratch")


def producer_per_view(text: str, views: list[str]) -> str:
    """supervisord.conf's ``[program:producer]`` as one ``[program:producer-<view>]`` per
    view, as README "Several views" tells an operator to write them: each names its view
    (``--view``), its log and its metrics port (9400, 9401, …). Pure."""
    match = re.search(r"^\[program:producer\]\n.*?(?=^\[)", text, flags=re.MULTILINE | re.DOTALL)
    if match is None or text.count('METRICS_PORT="9400"') != 1:
        raise SystemExit("[demo] supervisord.conf has no single [program:producer] section")
    block = match.group(0)
    sections = []
    for number, view in enumerate(views):
        section = block.replace("[program:producer]", f"[program:producer-{view}]")
        section = section.replace(
            "command=searchsync-producer", f"command=searchsync-producer --view {view}"
        )
        section = section.replace('METRICS_PORT="9400"', f'METRICS_PORT="{9400 + number}"')
        section = section.replace("run/producer.log", f"run/producer-{view}.log")
        sections.append(section)
    return text[: match.start()] + "".join(sections) + text[match.end() :]


def write_config(consumers: int, views: list[str]) -> None:
    """supervisord.conf as the README runs it, with a producer per view and ``numprocs`` =
    ``consumers``."""
    text, found = re.subn(
        r"^numprocs=\d+$",
        f"numprocs={consumers}",
        (ROOT / "supervisord.conf").read_text(),
        flags=re.MULTILINE,
    )
    if found != 1:
        raise SystemExit("[demo] supervisord.conf has no single numprocs= line")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    CONFIG.write_text(producer_per_view(text, views))


def supervisor(consumers: int) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        # the views file names each view and its alias (common.views refuses both)
        if name not in ("VIEW_NAME", "KEY_COLUMN", "OS_INDEX_NAME", "INDEX_MAPPING")
    }
    env.update(
        # the copy has no .venv beside it: the programs are found on PATH
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        LOG_FORMAT="text",
        MAX_BATCH_AGE_SECONDS="1",
    )
    env[CONFIG_VARIABLE] = str(VIEWS_FILE)
    return env


def supervisorctl(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(CONFIG), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()


async def run_command(*argv: str, env: dict[str, str] | None = None) -> int:
    """Run a command to completion, output to ours; its exit status."""
    proc = await asyncio.create_subprocess_exec(*argv, env=env)
    return await proc.wait()


async def index_count(client: AsyncOpenSearch, index: str = INDEX) -> int:
    try:
        await client.indices.refresh(index=index)
        return int((await client.count(index=index))["count"])
    except NotFoundError:
        return 0


async def wait_for_snapshot(
    client: AsyncOpenSearch, expected: int, limit: float, index: str = INDEX
) -> float:
    start = time.monotonic()
    last = -1
    while time.monotonic() - start < limit:
        count = await index_count(client, index)
        if count != last:
            say(f"  {index}: indexed {count:,} / {expected:,}")
            last = count
        if count >= expected:
            return time.monotonic() - start
        await asyncio.sleep(2.0)
    raise SystemExit(f"[demo] snapshot not searchable after {limit:.0f}s (see {RUN_DIR})")


async def wait_for_snapshots(
    client: AsyncOpenSearch, deployment: Deployment, rows: int, start: float
) -> None:
    """The orders snapshot (``rows``), then every other view's, searchable."""
    await wait_for_snapshot(client, rows, limit=600)
    say(f"snapshot of {rows:,} orders searchable {time.monotonic() - start:.1f}s after start")
    for view in deployment.views:
        if view.view_name != VIEW:
            count = await view_count(view.view_name)
            await wait_for_snapshot(client, count, limit=120, index=view.os_index_name)
            say(f"view {view.view_name}: {count:,} rows searchable in {view.os_index_name}")


async def measure_latency(
    client: AsyncOpenSearch, record: Path, load: asyncio.subprocess.Process, tail_seconds: float
) -> tuple[Tracker, list[str]]:
    """COMMIT → searchable and → retrievable of every recorded change (devstack.searchable),
    until the load ended and every change was seen or ``tail_seconds`` passed; and the
    changes never searchable."""
    tracker = Tracker(client, INDEX, record)
    deadline: float | None = None
    while True:
        await tracker.poll()
        if load.returncode is not None:
            deadline = deadline or time.monotonic() + tail_seconds
            if not tracker.pending or time.monotonic() > deadline:
                return tracker, tracker.unseen()
        await asyncio.sleep(0.05)


def _spread(label: str, values: list[float]) -> str:
    return (
        f"{label}, {len(values)} changes: p50 {percentile(values, 0.5):.2f}s  "
        f"p95 {percentile(values, 0.95):.2f}s  p99 {percentile(values, 0.99):.2f}s  "
        f"max {max(values, default=0):.2f}s"
    )


def metrics_summary(consumers: int) -> str:
    import urllib.request

    lines = []
    for port in range(9500, 9500 + consumers):  # consumer-P listens on P (supervisord.conf)
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
        except OSError as error:
            lines.append(f"  consumer-{port}: metrics unavailable ({error})")
            continue
        wanted = [
            line
            for line in body.decode().splitlines()
            if line.startswith(
                (
                    "opensearch_sync_events_total",
                    "opensearch_sync_errors_total",
                    "opensearch_sync_latency_seconds_count",
                    "opensearch_sync_latency_seconds_sum",
                )
            )
        ]
        lines.append(f"  consumer-{port} (:{port}/metrics): " + "; ".join(wanted))
    return "\n".join(lines)


async def check(env: dict[str, str], consumers: int, deployment: Deployment) -> int:
    """verify (each view), status (every view), metrics and dead letters, as an operator
    reads them; the worst verify's exit."""
    verified = 0
    for name in deployment.names:
        say(f"searchsync verify --view {name} (view vs index, every document):")
        searchsync = str(BIN / "searchsync")
        verified = max(verified, await run_command(searchsync, "verify", "--view", name, env=env))
    say("searchsync status (every view; its dead letters too):")
    await run_command(str(BIN / "searchsync"), "status", env=env)
    say("consumer metrics:\n" + metrics_summary(consumers))
    return verified


async def run(args: argparse.Namespace) -> int:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    client = AsyncOpenSearch(
        hosts=[{"host": os.environ["OS_HOST"], "port": int(os.environ["OS_PORT"])}], timeout=30
    )
    env = supervisor(args.consumers)
    deployment = deployment_or_exit(env)
    try:
        await ensure_schema()
        rows = await view_count()
        if rows == 0:
            say(f"seeding {args.orders:,} FreshMart orders")
            seed = [str(ROOT / "devstack" / "seed"), "--orders", str(args.orders), "--seed", "1"]
            if await run_command(*seed):
                raise SystemExit("[demo] seeding failed")
            await asyncio.sleep(2.5)  # the emulator picks the reseed up on its next tick
            rows = await view_count()
        say(f"view {VIEW}: {rows:,} rows (PostgreSQL, through the Materialize emulator)")
        if CONFIG.exists() and "RUNNING" in supervisorctl(env, "status"):
            supervisorctl(env, "shutdown")
            await asyncio.sleep(1)
        if not args.keep_state:
            await reset_state(redis, client, deployment)
        write_config(args.consumers, list(deployment.names))
        start = time.monotonic()
        if await run_command(str(BIN / "supervisord"), "-c", str(CONFIG), env=env):
            raise SystemExit("[demo] supervisord did not start")
        say(
            f"pipeline started under supervisord: {len(deployment.views)} producers (one per "
            f"view: {', '.join(deployment.names)}), {args.consumers} consumers serving every "
            f"view (logs in {RUN_DIR})"
        )
        await wait_for_snapshots(client, deployment, rows, start)

        record = RUN_DIR / "load.jsonl"
        record.unlink(missing_ok=True)
        say(
            f"load: {args.rate} changes/s for {args.seconds}s (new orders, status changes, "
            "courier assignments, ETAs, address edits, cancellations and deletions)"
        )
        load = await asyncio.create_subprocess_exec(
            str(ROOT / "devstack" / "load"),
            *("--rate", str(args.rate), "--seconds", str(args.seconds)),
            *("--seed", "7", "--record", str(record)),
        )
        waiter = asyncio.create_task(load.wait())
        latencies, unseen = await measure_latency(client, record, load, tail_seconds=30)
        await waiter
        say(
            _spread("PostgreSQL COMMIT → searchable (_search)", latencies.searchable)
            + (f"  ({len(unseen)} not searchable within 30s)" if unseen else "")
        )
        say(_spread("PostgreSQL COMMIT → retrievable by id (mget)", latencies.retrievable))
        for change in unseen[:10]:
            say(f"  not seen: {change}")

        verified = await check(env, args.consumers, deployment)
        if args.live:
            await live_view(redis, client, args, deployment)
        return verified or (1 if unseen else 0)
    finally:
        if not args.keep_running:
            supervisorctl(env, "shutdown")
            say("pipeline stopped (devstack services keep running; devstack/down stops them)")
        else:
            say(f"pipeline left running: {BIN}/supervisorctl -c {CONFIG} status")
        await client.close()
        await redis.aclose()


async def live_view(
    redis: Redis, client: AsyncOpenSearch, args: argparse.Namespace, deployment: Deployment
) -> None:
    """The dashboard while the load keeps running; Ctrl-C (or --live-seconds) ends it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    load = await asyncio.create_subprocess_exec(
        str(ROOT / "devstack" / "load"),
        *("--rate", str(args.rate), "--seconds", str(args.live_seconds or 10**9), "--seed", "8"),
        stdout=asyncio.subprocess.DEVNULL,
    )
    say(f"live view: load at {args.rate} changes/s; Ctrl-C stops the load and the pipeline")
    ends = time.monotonic() + args.live_seconds if args.live_seconds else float("inf")
    settings = deployment.view(VIEW)  # what the orders producer and consumers run with
    try:
        latest = await dashboard.live(
            redis,
            client,
            Keys(settings.view_name, settings.stream_partitions),
            view=settings.view_name,
            group=settings.consumer_group,
            index=settings.os_index_name,
            member_ttl_ms=int(settings.lease_ttl_seconds * 1000),
            until=lambda: stop.is_set() or time.monotonic() > ends,
        )
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if load.returncode is None:
            load.terminate()
        await load.wait()
    print(flush=True)  # rich leaves the last frame's line open off a terminal
    if latest:
        order = latest[0]
        found = await client.search(index=INDEX, q=f"order_number:{order.order_number}")
        age = time.time() - order.sync_version / 1000
        base = f"http://{os.environ['OS_HOST']}:{os.environ['OS_PORT']}"
        say(
            f"order {order.order_number}, changed {age:.1f}s ago, is searchable "
            f"({found['hits']['total']['value']} hit now):"
        )
        print(f"  {order.search_command(base, INDEX)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=25000, help="orders to seed if empty")
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--rate", type=int, default=20, help="load: changes per second")
    parser.add_argument("--seconds", type=int, default=30, help="load: how long")
    parser.add_argument(
        "--keep-state", action="store_true", help="resume from the existing checkpoint and index"
    )
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the pipeline running at the end"
    )
    parser.add_argument(
        "--no-live",
        dest="live",
        action="store_false",
        default=sys.stdout.isatty(),
        help="skip the live view at the end (the default when stdout is not a terminal)",
    )
    parser.add_argument("--live", action="store_true", help="show the live view even without a tty")
    parser.add_argument(
        "--live-seconds",
        type=float,
        default=0,
        help="end the live view after S seconds (0: Ctrl-C)",
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
