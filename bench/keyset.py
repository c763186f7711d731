"""Benchmark: bytes and nanoseconds per key of producer/keyset.py's sets, at 1M keys.

    .venv/bin/python -m bench.keyset [--keys 1000000] [--repeat 5]

No services. Keys are shaped like the view's, ``order:FM-0000000`` to
``order:FM-0999999`` (16 characters). Three holders of the same keys:

* ``c``: ``producer._speedups.KeySet`` (one int64 fingerprint a key);
* ``python``: :class:`producer.keyset.PyKeySet` (a set of ``hash(key)`` ints);
* ``python_set_of_str``: the baseline, a plain ``set[str]`` holding the keys;
* ``consolidator``: what the producer really keeps, a
  :class:`producer.consolidate.Consolidator` after a snapshot of the keys
  (``consolidator_state_bytes_per_key``: its whole per-key state, whatever it holds).

Memory: each holder is built in its own child process (so no holder reuses memory
another freed) from keys made 10,000 at a time, as the producer gets them from
rows: the set[str] keeps its str objects, the other two drop them. Twice: first
without tracemalloc for the growth of RSS (``rss_delta_mb``, the C one's; the
others as ``*_rss_delta_mb``), then under tracemalloc for the bytes allocated
(``*_bytes_per_key``; what the holder allocated, rounded by no allocator; RSS also
counts pymalloc's rounding of a 36-byte int or a 65-byte str up to 48 and 80).

Time (this process, no tracemalloc, best of ``--repeat``): per key, the C set's
``add`` of 1M new keys whose str already caches its hash (a key the producer has
used as a dict key; ``c_add_uncached_ns``: fresh str objects, SipHash included),
``update`` with a list, ``in`` for a key in the set and one not; the same for the
set[str] and the PyKeySet as baselines. Each call goes through
``deque(map(...), maxlen=0)``, so ~20-30 ns of every figure is the call itself.

The last line printed is one JSON object, like the other bench/ scripts'.
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import json
import operator
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchsync.producer import native  # noqa: E402
from searchsync.producer.consolidate import Consolidator  # noqa: E402
from searchsync.producer.keyset import KeySetLike, PyKeySet  # noqa: E402
from searchsync.producer.rows import Layout, Rejected  # noqa: E402

# "consolidator": the producer's whole per-key state (producer.consolidate) after a
# snapshot of the keys, which is what runs in production
HOLDERS = ("c", "python", "python_set_of_str", "consolidator")
CHUNK = 10_000


def key_chunks(count: int) -> Iterator[list[str]]:
    """Fresh str objects, CHUNK at a time (hashes not computed yet)."""
    for start in range(0, count, CHUNK):
        yield [f"order:FM-{n:07d}" for n in range(start, min(start + CHUNK, count))]


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def c_key_set() -> KeySetLike:
    if native.speedups is None:
        raise SystemExit("searchsync.producer._speedups is not built: pip install -e .")
    return native.speedups.KeySet()


def build(holder: str, count: int) -> Any:
    if holder == "consolidator":
        return consolidator_after_snapshot(count)
    keys: KeySetLike | set[str] = (
        c_key_set() if holder == "c" else PyKeySet() if holder == "python" else set()
    )
    for chunk in key_chunks(count):
        keys.update(chunk)
    return keys


def consolidator_after_snapshot(count: int) -> Consolidator:
    """The producer's per-key state after a resume's snapshot of ``count`` keys: a
    Consolidator fed the snapshot in FETCH-sized batches of SUBSCRIBE rows (read for
    the state only, as on every resume), then the progress row that completes it."""
    layout = Layout.from_columns(
        ["mz_timestamp", "mz_progressed", "mz_diff", "order_id", "order_status"],
        "diffs",
        "order_id",
    )
    consolidator = Consolidator(snapshot=True, write_snapshot=False)
    rejected: list[Rejected] = []
    consolidator.feed_rows(layout, [("1000", True, None, None, None)], rejected)
    for chunk in key_chunks(count):
        rows = [("1000", False, 1, key, "placed") for key in chunk]
        consolidator.feed_rows(layout, rows, rejected)
    consolidator.feed_rows(layout, [("1001", True, None, None, None)], rejected)
    assert consolidator.snapshot_done and consolidator.live_keys == count and not rejected
    return consolidator


def nbytes_of(keys: Any) -> int:
    if isinstance(keys, Consolidator):
        return keys.state_bytes()
    return sys.getsizeof(keys) if isinstance(keys, set) else int(keys.nbytes)


def measure_memory(holder: str, count: int) -> dict[str, Any]:
    """In a child process: the holder's RSS growth, then its traced bytes."""
    gc.collect()
    before = rss_bytes()
    keys = build(holder, count)
    gc.collect()
    rss_delta = rss_bytes() - before
    nbytes = nbytes_of(keys)
    del keys
    gc.collect()
    tracemalloc.start()
    keys = build(holder, count)
    gc.collect()
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "holder": holder,
        "len": keys.live_keys if isinstance(keys, Consolidator) else len(keys),
        "rss_delta_bytes": rss_delta,
        "traced_bytes": traced,
        "traced_peak_bytes": peak,
        "nbytes": nbytes,
    }


def memory_in_child(holder: str, count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.keyset", "--memory-of", holder, "--keys", str(count)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ns_per_call(call: Callable[[str], object], keys: list[str]) -> float:
    started = time.perf_counter_ns()
    collections.deque(map(call, keys), maxlen=0)
    return (time.perf_counter_ns() - started) / len(keys)


def ns_per_in(holder: Any, keys: list[str]) -> float:
    started = time.perf_counter_ns()
    collections.deque(map(operator.contains, itertools.repeat(holder), keys), maxlen=0)
    return (time.perf_counter_ns() - started) / len(keys)


def best(runs: Iterable[float]) -> float:
    return round(min(runs), 1)


def measure_time(make: Callable[[], Any], count: int, repeat: int) -> dict[str, float]:
    """ns per key of add (cached and uncached hash), update, in and not in."""
    keys = [key for chunk in key_chunks(count) for key in chunk]
    missing = [f"order:FM-{n:07d}" for n in range(count, 2 * count)]
    for key in itertools.chain(keys, missing):
        hash(key)  # cached in the str from now on
    adds, uncached, updates, hits, misses = [], [], [], [], []
    for _ in range(repeat):
        holder = make()
        adds.append(ns_per_call(holder.add, keys))
        hits.append(ns_per_in(holder, keys))
        misses.append(ns_per_in(holder, missing))
        fresh = [key for chunk in key_chunks(count) for key in chunk]
        holder = make()
        uncached.append(ns_per_call(holder.add, fresh))
        del fresh
        holder = make()
        started = time.perf_counter_ns()
        holder.update(keys)
        updates.append((time.perf_counter_ns() - started) / count)
        del holder
    return {
        "add_ns": best(adds),
        "add_uncached_ns": best(uncached),
        "update_ns": best(updates),
        "contains_ns": best(hits),
        "contains_missing_ns": best(misses),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-of", choices=HOLDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    count: int = args.keys
    if args.memory_of:  # the child
        print(json.dumps(measure_memory(args.memory_of, count)))
        return 0
    c_key_set()  # refuse to run without the C module
    memory = {holder: memory_in_child(holder, count) for holder in HOLDERS}
    times = {
        "c": measure_time(c_key_set, count, args.repeat),
        "python": measure_time(PyKeySet, count, args.repeat),
        "python_set_of_str": measure_time(set, count, args.repeat),
    }

    def per_key(holder: str, field: str) -> float:
        return round(float(memory[holder][field]) / count, 1)

    def mb(holder: str) -> float:
        return round(float(memory[holder]["rss_delta_bytes"]) / 2**20, 1)

    result = {
        "scenario": "keyset",
        "keys": count,
        "c_bytes_per_key": per_key("c", "traced_bytes"),
        "python_bytes_per_key": per_key("python", "traced_bytes"),
        "python_set_of_str_bytes_per_key": per_key("python_set_of_str", "traced_bytes"),
        "c_add_ns": times["c"]["add_ns"],
        "c_contains_ns": times["c"]["contains_ns"],
        "rss_delta_mb": mb("c"),
        "measures": "bytes: tracemalloc of each holder built alone in a child process "
        "(set[str]: its str objects included); ns: per call via deque(map(...))",
        "c_nbytes_per_key": per_key("c", "nbytes"),
        "python_nbytes_per_key": per_key("python", "nbytes"),
        "python_rss_delta_mb": mb("python"),
        "python_set_of_str_rss_delta_mb": mb("python_set_of_str"),
        "c_rss_bytes_per_key": per_key("c", "rss_delta_bytes"),
        "python_rss_bytes_per_key": per_key("python", "rss_delta_bytes"),
        "python_set_of_str_rss_bytes_per_key": per_key("python_set_of_str", "rss_delta_bytes"),
        "baseline": {
            "what": "set[str] of the same keys, measured in the same run",
            "bytes_per_key": per_key("python_set_of_str", "traced_bytes"),
            "add_ns": times["python_set_of_str"]["add_ns"],
            "contains_ns": times["python_set_of_str"]["contains_ns"],
        },
        "memory_ratio": round(
            memory["c"]["traced_bytes"] / memory["python_set_of_str"]["traced_bytes"], 3
        ),
        "consolidator_state_bytes_per_key": per_key("consolidator", "traced_bytes"),
        "consolidator_rss_bytes_per_key": per_key("consolidator", "rss_delta_bytes"),
        "times_ns": times,
        "memory": memory,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
