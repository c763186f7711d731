"""Benchmark: bytes per key of the polling fallback's digests, and CPU per row of a poll.

    .venv/bin/python -m bench.polling [--keys 100000,1000000] [--rows 200000]

No services but a private ``redis-server`` (Debian's, as devstack/up installs it;
skipped when absent). Keys are shaped like the view's, ``order:FM-0000000``…

* ``dict_bytes_per_key[N]``: producer/polling.py's in-memory state, a
  ``dict[str, int]`` of N keys → 64-bit digests, built in a child process from
  fresh key strings and digests as a poll builds it; tracemalloc's bytes (what was
  allocated: the str, the int, the dict's slots) and the child's RSS growth.
* ``redis_bytes_per_key[N]``: ``MEMORY USAGE`` of the ``poll:digests`` hash (field
  = key, value = 8 bytes) over N.
* ``scan_us_per_row``: :class:`producer.polling.RowScan` ``add`` of unchanged
  FreshMart-shaped rows (18 columns, :class:`producer.documents.DocumentEncoder`, C
  writer if built), CPU time (``process_time``, best of 3): what a poll spends per
  unchanged row after psycopg loaded it; ``encode_us_per_row`` of it is the
  encoding, the rest the digest and the dict lookups.

The last line printed is one JSON object, like the other bench/ scripts'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchsync.producer.documents import ColumnKind, DocumentEncoder  # noqa: E402
from searchsync.producer.polling import RowScan  # noqa: E402

CHUNK = 10_000


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_digests(count: int) -> dict[str, int]:
    """Keys and digests as a poll makes them: fresh str per row, blake2b int per key."""
    import hashlib

    digests: dict[str, int] = {}
    for start in range(0, count, CHUNK):
        for n in range(start, min(start + CHUNK, count)):
            key = f"order:FM-{n:07d}"
            digests[key] = int.from_bytes(
                hashlib.blake2b(key.encode(), digest_size=8).digest(), "big"
            )
    return digests


def child_memory(count: int) -> dict[str, float]:
    """Run in a child: RSS growth, then tracemalloc bytes, of one digest dict."""
    before = rss_bytes()
    digests = build_digests(count)
    rss = rss_bytes() - before
    del digests
    tracemalloc.start()
    digests = build_digests(count)
    allocated, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"tracemalloc": allocated / count, "rss": rss / count, "keys": len(digests)}


def memory(count: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.polling", "--child", str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def redis_bytes_per_key(count: int) -> float | None:
    """MEMORY USAGE of a poll:digests-shaped hash in a private redis-server, per key."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    import socket

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        digests = build_digests(count)
        items = list(digests.items())
        pipe = client.pipeline(transaction=False)
        for start in range(0, count, 5000):
            mapping = {k: v.to_bytes(8, "big") for k, v in items[start : start + 5000]}
            pipe.hset("searchsync:v:poll:digests", mapping=mapping)  # type: ignore[arg-type]
        pipe.execute()
        used = client.memory_usage("searchsync:v:poll:digests", samples=0)
        client.close()
        return None if used is None else int(used) / count
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


COLUMNS: list[tuple[str, ColumnKind, Any]] = [
    ("order_id", "plain", "order:FM-{n}"),
    ("order_number", "plain", "FM-{n}"),
    ("order_status", "plain", "out_for_delivery"),
    ("store_id", "plain", "store:S-12"),
    ("customer_id", "plain", "customer:C-{n}"),
    ("delivery_window_start", "timestamptz", "2026-01-01 10:00:00+00"),
    ("delivery_window_end", "timestamptz", "2026-01-01 11:00:00+00"),
    ("order_total_amount", "number", "123.45"),
    ("customer_name", "plain", "Customer number {n}"),
    ("customer_email", "plain", "customer{n}@example.com"),
    ("customer_address", "plain", "{n} Long Street Name, Springfield"),
    ("store_name", "plain", "FreshMart Downtown"),
    ("store_zone", "plain", "north"),
    ("store_address", "plain", "12 Market Square"),
    ("assigned_courier_id", "plain", "courier:K-{n}"),
    ("delivery_task_status", "plain", "in_progress"),
    ("delivery_eta", "timestamptz", "2026-01-01 10:40:00.123456+00"),
    ("effective_updated_at", "timestamptz", "2026-01-01 09:59:59.654321+00"),
]


def scan_cost(rows: int) -> dict[str, float]:
    encoder = DocumentEncoder([c[0] for c in COLUMNS], [c[1] for c in COLUMNS])
    data = [tuple(str(c[2]).format(n=n) for c in COLUMNS) for n in range(rows)]
    version = 1_796_379_551_865
    first = RowScan({}, version, encoder.encode)
    for row in data:
        first.add(row[0], row)
    best_scan = best_encode = float("inf")
    for _ in range(3):
        scan = RowScan(first.digests, version + 1, encoder.encode)  # every row unchanged
        start = time.process_time()
        for row in data:
            scan.add(row[0], row)
        best_scan = min(best_scan, time.process_time() - start)
        assert not scan.docs
        start = time.process_time()
        for row in data:
            encoder.encode(row, 0)
        best_encode = min(best_encode, time.process_time() - start)
    return {
        "scan_us_per_row": round(best_scan / rows * 1e6, 3),
        "encode_us_per_row": round(best_encode / rows * 1e6, 3),
        "doc_bytes": len(encoder.encode(data[0], version)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", default="100000,1000000")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_memory(args.child)))
        return
    result: dict[str, Any] = {"dict_bytes_per_key": {}, "dict_rss_per_key": {}}
    result["redis_bytes_per_key"] = {}
    for count in (int(n) for n in args.keys.split(",")):
        measured = memory(count)
        result["dict_bytes_per_key"][count] = round(measured["tracemalloc"], 1)
        result["dict_rss_per_key"][count] = round(measured["rss"], 1)
        used = redis_bytes_per_key(count)
        result["redis_bytes_per_key"][count] = None if used is None else round(used, 1)
    result.update(scan_cost(args.rows))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
