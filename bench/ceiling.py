"""The raw `_bulk` ceiling: what OpenSearch itself takes, the baseline of every drain bench.

Pre-encoded NDJSON bodies (the consumers' own encoder, ``consumer.bulk.encode_body``:
same ids, same external versions, same documents, byte for byte) are posted with plain
HTTP (aiohttp, one keep-alive connection per sender) to a fresh index made with the
project's mapping, through the alias with the consumers' query parameters. Nothing is
read from Redis, nothing decoded: any pipeline that reads, decodes and acknowledges
can only approach this figure. Encoding happens before the clock starts.

    .venv/bin/python -m bench.ceiling [--events N] [--bulk 1000] [--connections 1,2,3,4]
                                      [--quick]  (20,000 documents, 1 and 2 connections)

The last line printed is one JSON object (README "Development" lists the fields).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from opensearchpy import AsyncOpenSearch

from bench.documents import order_document
from bench.saved import common_arguments, emit, int_list
from devstack.env import require
from searchsync.common.entries import Change
from searchsync.common.index import ensure_index
from searchsync.consumer.bulk import BULK_PARAMS, encode_body

__all__ = ["Ceiling", "bodies_of", "measure", "sweep"]

METHOD = (
    "pre-encoded _bulk bodies (consumer.bulk.encode_body: same ids, external versions, "
    "documents) posted with plain HTTP (aiohttp), one keep-alive connection per sender, "
    "fresh index with the project's mapping, through the alias with require_alias=true"
)


class _Response(msgspec.Struct):
    errors: bool = False


_DECODE = msgspec.json.Decoder(_Response)


def bodies_of(changes: Sequence[Change], bulk: int) -> list[bytes]:
    """``changes`` as ``_bulk`` bodies of ``bulk`` actions each, in order."""
    return [encode_body(changes[start : start + bulk]) for start in range(0, len(changes), bulk)]


@dataclass(frozen=True, slots=True)
class Ceiling:
    connections: int
    events: int
    seconds: float
    failed_requests: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "failed_requests": self.failed_requests,
        }


async def _send_all(url: str, bodies: Iterator[bytes], failed: list[int]) -> None:
    """One sender: one connection, bodies taken from the shared iterator until it ends."""
    connector = aiohttp.TCPConnector(limit=1)
    headers = {"content-type": "application/x-ndjson"}
    async with aiohttp.ClientSession(connector=connector) as session:
        for body in bodies:
            async with session.post(url, data=body, headers=headers, params=BULK_PARAMS) as reply:
                payload = await reply.read()
            if reply.status != 200 or _DECODE.decode(payload).errors:
                failed.append(reply.status)


async def measure(
    search: AsyncOpenSearch,
    *,
    base_url: str,
    alias: str,
    bodies: Sequence[bytes],
    events: int,
    connections: int,
) -> Ceiling:
    """Post ``bodies`` into a fresh ``alias`` over ``connections`` connections; time it.

    The index is created first (``ensure_index``: the project's mapping) and deleted
    after. Raises RuntimeError when the index does not hold ``events`` documents after
    (a ceiling that lost documents is no ceiling).
    """
    index = await ensure_index(search, alias, retention_seconds=86_400)
    try:
        shared = iter(bodies)  # senders take turns on one iterator: no body sent twice
        failed: list[int] = []
        url = f"{base_url}/{alias}/_bulk"
        started = time.monotonic()
        await asyncio.gather(*(_send_all(url, shared, failed) for _ in range(connections)))
        seconds = time.monotonic() - started
        await search.indices.refresh(index=alias)
        indexed = int((await search.count(index=alias))["count"])
        if indexed != events:
            raise RuntimeError(f"ceiling run indexed {indexed} of {events} documents")
        return Ceiling(connections, events, seconds, len(failed))
    finally:
        await search.indices.delete(index=index, params={"ignore_unavailable": "true"})


async def sweep(
    search: AsyncOpenSearch,
    *,
    base_url: str,
    prefix: str,
    changes: Sequence[Change],
    bulk: int,
    connections: Sequence[int],
    say: Any = None,
) -> dict[str, Any]:
    """:func:`measure` at every connection count; the best is the ceiling."""
    bodies = bodies_of(changes, bulk)
    runs: list[Ceiling] = []
    for count in connections:
        run = await measure(
            search, base_url=base_url, alias=f"{prefix}_c{count}", bodies=bodies,
            events=len(changes), connections=count,
        )  # fmt: skip
        if say is not None:
            say(f"raw _bulk ceiling, {count} connection(s): {run.events_per_s:,.0f} docs/s")
        runs.append(run)
    best = max(runs, key=lambda run: run.events_per_s)
    return {
        "method": METHOD,
        "bulk_size": bulk,
        "connections": best.connections,
        "events_per_s": round(best.events_per_s, 1),
        "by_connections": [run.as_json() for run in runs],
    }


def order_changes(events: int, seed: int = 7) -> list[Change]:
    """``events`` upserts of distinct FreshMart orders (bench.consumers' documents)."""
    rnd = random.Random(seed)
    base = int(time.time() * 1000)
    return [Change(base + n, *order_document(n, base + n, rnd)) for n in range(events)]


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    try:
        env = require(("OS_HOST", "OS_PORT"))
    except RuntimeError as error:
        sys.exit(f"bench: {error}")
    search = AsyncOpenSearch(
        hosts=[{"host": env["OS_HOST"], "port": int(env["OS_PORT"])}], timeout=120, max_retries=0
    )
    base_url = f"http://{env['OS_HOST']}:{env['OS_PORT']}"
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    try:
        changes = order_changes(args.events)
        prefix = f"bench_ceiling_{int(time.time())}"
        # one unmeasured pass so the JVM's JIT is warm before anything is measured
        warm = changes[:30_000]
        await measure(
            search, base_url=base_url, alias=f"{prefix}_warm", bodies=bodies_of(warm, args.bulk),
            events=len(warm), connections=2,
        )  # fmt: skip
        result = await sweep(
            search, base_url=base_url, prefix=prefix, changes=changes, bulk=args.bulk,
            connections=args.connections, say=say,
        )  # fmt: skip
    finally:
        await search.close()
    mean_doc = sum(len(change.doc or b"") for change in changes) / len(changes)
    return {
        "scenario": "raw_bulk_ceiling",
        "events": args.events,
        "seconds": round(args.events / result["events_per_s"], 3),
        "events_per_s": result["events_per_s"],
        "baseline": None,
        "ratio": None,
        "mean_document_bytes": round(mean_doc),
        **{key: value for key, value in result.items() if key != "events_per_s"},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--connections", type=int_list, default=[1, 2, 3, 4])
    common_arguments(parser, "a smoke run of a few seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.connections = 20_000, [1, 2]
    return args


def main() -> None:
    args = parse_args()
    emit(asyncio.run(amain(args)), args, "bench.ceiling", sys.argv[1:])


if __name__ == "__main__":
    main()
