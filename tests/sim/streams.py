"""An in-memory model of the Redis state the consumers use (one view, one group).

What it models, because the protocol depends on it:

* streams with ids ``<ms>-<seq>`` from the model's clock, XADD, XTRIM MINID (exact);
* one consumer group per stream: last-delivered id, the pending entries list with
  the owner and delivery count of each entry, XREADGROUP ``>``, XACK,
  XAUTOCLAIM / XCLAIM with min-idle 0 (a trimmed entry is dropped from the pending
  list and not returned, as Redis >= 7 does), XPENDING summary and range;
* keys with a PX expiry on the model's clock (the leases), compare-and-act as the
  consumer.leases / common.owned_keys scripts do;
* hashes (attempts, applied, counts), the members sorted set, the high-water mark
  and the dead-letter stream.

Every command is atomic (Redis runs one command or script at a time); a pipeline
is a sequence of commands, which a connection failure can cut between any two.
tests/integration/test_sim_contract.py runs the same checks against real Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from searchsync.consumer.retention import parse_id

__all__ = ["Group", "Pending", "RedisModel", "Stream"]

Id = tuple[int, int]
Fields = dict[bytes, bytes]


def _bytes(entry_id: Id) -> bytes:
    return f"{entry_id[0]}-{entry_id[1]}".encode()


@dataclass(slots=True)
class Pending:
    consumer: str
    deliveries: int


@dataclass(slots=True)
class Group:
    last_delivered: Id = (0, 0)
    pending: dict[Id, Pending] = field(default_factory=dict)

    def pending_ids(self) -> list[Id]:
        return sorted(self.pending)


@dataclass(slots=True)
class Stream:
    entries: dict[Id, Fields] = field(default_factory=dict)
    order: list[Id] = field(default_factory=list)  # ids in order (entries may be trimmed)
    last_id: Id = (0, 0)
    group: Group = field(default_factory=Group)


class RedisModel:
    """The state; ``now_ms`` is the server clock. Methods are single Redis commands."""

    def __init__(self, now_ms: Callable[[], int]) -> None:
        self.now_ms = now_ms
        self.streams: dict[str, Stream] = {}
        self.strings: dict[str, tuple[str, int | None]] = {}  # value, expires at ms
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.zsets: dict[str, dict[str, float]] = {}

    # streams

    def stream(self, name: str) -> Stream:
        found = self.streams.get(name)
        if found is None:
            found = self.streams[name] = Stream()
        return found

    def xadd(self, name: str, fields: Fields) -> bytes:
        stream = self.stream(name)
        now = self.now_ms()
        last = stream.last_id
        new = (now, 0) if now > last[0] else (last[0], last[1] + 1)
        stream.last_id = new
        stream.entries[new] = dict(fields)
        stream.order.append(new)
        return _bytes(new)

    def xlen(self, name: str) -> int:
        return len(self.stream(name).entries)

    def xrange(self, name: str) -> list[tuple[bytes, Fields]]:
        stream = self.stream(name)
        return [(_bytes(i), stream.entries[i]) for i in stream.order if i in stream.entries]

    def xtrim_minid(self, name: str, minid: bytes) -> int:
        """Delete entries below ``minid`` (pending or not: Redis does not look)."""
        stream = self.stream(name)
        floor = parse_id(minid)
        gone = [i for i in stream.order if i < floor and i in stream.entries]
        for entry_id in gone:
            del stream.entries[entry_id]
        stream.order = [i for i in stream.order if i >= floor]
        return len(gone)

    def xreadgroup(self, name: str, consumer: str, count: int) -> list[tuple[bytes, Fields]]:
        stream = self.stream(name)
        group = stream.group
        out: list[tuple[bytes, Fields]] = []
        for entry_id in stream.order:
            if len(out) >= count:
                break
            if entry_id <= group.last_delivered or entry_id not in stream.entries:
                continue
            group.last_delivered = entry_id
            group.pending[entry_id] = Pending(consumer, 1)
            out.append((_bytes(entry_id), stream.entries[entry_id]))
        return out

    def xack(self, name: str, ids: Iterable[bytes]) -> int:
        group = self.stream(name).group
        done = 0
        for raw in ids:
            done += group.pending.pop(parse_id(raw), None) is not None
        return done

    def _claim(self, stream: Stream, entry_id: Id, consumer: str) -> Fields | None:
        entry = stream.group.pending.get(entry_id)
        if entry is None:
            return None
        fields = stream.entries.get(entry_id)
        if fields is None:  # trimmed while pending: dropped from the list
            del stream.group.pending[entry_id]
            return None
        entry.consumer = consumer
        entry.deliveries += 1
        return fields

    def xautoclaim(
        self, name: str, consumer: str, start: bytes, count: int
    ) -> tuple[bytes, list[tuple[bytes, Fields]]]:
        stream = self.stream(name)
        floor = parse_id(start)
        ids = [i for i in stream.group.pending_ids() if i >= floor]
        out: list[tuple[bytes, Fields]] = []
        # as Redis: at most count * 10 pending entries looked at, count claimed; trimmed
        # ones are dropped from the list without counting; the cursor is the next id
        attempts, index = count * 10, 0
        while attempts and len(out) < count and index < len(ids):
            attempts -= 1
            fields = self._claim(stream, ids[index], consumer)
            if fields is not None:
                out.append((_bytes(ids[index]), fields))
            index += 1
        cursor = _bytes(ids[index]) if index < len(ids) else b"0-0"
        return cursor, out

    def xclaim(self, name: str, consumer: str, ids: Sequence[bytes]) -> list[tuple[bytes, Fields]]:
        stream = self.stream(name)
        out: list[tuple[bytes, Fields]] = []
        for raw in ids:
            fields = self._claim(stream, parse_id(raw), consumer)
            if fields is not None:
                out.append((raw, fields))
        return out

    def xpending_count(self, name: str) -> int:
        return len(self.stream(name).group.pending)

    def xpending_below(self, name: str, entry_id: bytes, count: int) -> list[bytes]:
        """XPENDING - (<entry_id> <count>: ids pending below ``entry_id``, oldest first."""
        top = parse_id(entry_id)
        ids = [i for i in self.stream(name).group.pending_ids() if i < top]
        return [_bytes(i) for i in ids[:count]]

    # strings with expiry (leases)

    def get(self, key: str) -> str | None:
        found = self.strings.get(key)
        if found is None:
            return None
        value, expires = found
        if expires is not None and expires <= self.now_ms():
            del self.strings[key]
            return None
        return value

    def set_px(self, key: str, value: str, px: int) -> None:
        self.strings[key] = (value, self.now_ms() + px)

    def pexpire(self, key: str, px: int) -> bool:
        value = self.get(key)
        if value is None:
            return False
        self.strings[key] = (value, self.now_ms() + px)
        return True

    def incr(self, key: str) -> int:
        """INCR of a string key without expiry (producer:epoch)."""
        value = int(self.get(key) or 0) + 1
        self.strings[key] = (str(value), None)
        return value

    def delete(self, key: str) -> bool:
        present = self.get(key) is not None
        self.strings.pop(key, None)
        return present

    # hashes and sorted sets

    def hash(self, key: str) -> dict[bytes, bytes]:
        found = self.hashes.get(key)
        if found is None:
            found = self.hashes[key] = {}
        return found

    def hincrby(self, key: str, field_name: bytes | str, by: int) -> int:
        table = self.hash(key)
        if isinstance(field_name, str):
            field_name = field_name.encode()
        value = int(table.get(field_name, b"0")) + by
        table[field_name] = str(value).encode()
        return value

    def zset(self, key: str) -> dict[str, float]:
        found = self.zsets.get(key)
        if found is None:
            found = self.zsets[key] = {}
        return found
