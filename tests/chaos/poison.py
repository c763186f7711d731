"""Poison the run plants in the partition streams, and which dead letters it explains.

What is planted is what an attacker or a buggy tool could XADD by hand: upserts
(``u``) of keys the view does not have, whose document OpenSearch rejects against
the project's mapping (``delivery_eta`` is a ``date``), and one progress entry
(``p``) with an absurd timestamp. These, and only these, may end in the
dead-letter stream: :func:`classify` sorts the dead letters found at the end into
planted (once each), duplicates of planted ones, and unexpected (a real change
dead-lettered by mistake). The sorting is pure, so it is unit-tested.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import redis

from searchsync.common.entries import encode_progress
from searchsync.common.keys import Keys
from searchsync.common.partition import partition_of

__all__ = ["ABSURD_TS", "DeadLetters", "Planted", "classify", "plant", "read_dead_letters"]

ABSURD_TS: Final = 99_999_999_999_999
POISON_KEYS: Final = ("poison-1", "poison-2", "poison-3")


@dataclass(frozen=True, slots=True)
class Planted:
    partition: int
    entry_id: str
    op: str  # "u" or "p"
    key: str  # "" for the progress entry
    ts: int
    doc: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        what = f"key {self.key}" if self.key else "progress"
        return f"{self.op} {what} ts {self.ts} at p{self.partition}/{self.entry_id}"


@dataclass(slots=True)
class DeadLetters:
    """The dlq's letters (decoded to text), sorted against what was planted."""

    matched: dict[int, dict[str, str]] = field(default_factory=dict)  # by planted index
    duplicates: list[dict[str, str]] = field(default_factory=list)
    unexpected: list[dict[str, str]] = field(default_factory=list)
    missing: list[Planted] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """The dlq holds exactly the planted poison, each entry once."""
        return not (self.duplicates or self.unexpected or self.missing)


def plant(client: redis.Redis, keys: Keys, rng: random.Random) -> list[Planted]:
    """XADD the poison, as a tool would: no ``counts`` bump, no producer involved."""
    planted: list[Planted] = []
    now = int(time.time() * 1000)
    for key in POISON_KEYS:
        partition = partition_of(key.encode(), keys.partitions)
        doc = json.dumps(
            {"order_id": key, "delivery_eta": "not a date", "sync_version": now},
            separators=(",", ":"),
        )
        fields = {b"ts": str(now).encode(), b"op": b"u", b"key": key.encode(), b"doc": doc.encode()}
        entry_id = _xadd(client, keys.stream(partition), fields)
        planted.append(Planted(partition, entry_id, "u", key, now, doc))
    partition = rng.randrange(keys.partitions)
    entry_id = _xadd(client, keys.stream(partition), encode_progress(ABSURD_TS))
    planted.append(Planted(partition, entry_id, "p", "", ABSURD_TS, None))
    return planted


def _xadd(client: redis.Redis, stream: str, fields: Mapping[bytes, bytes]) -> str:
    entry_id: Any = client.xadd(stream, dict(fields))  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def read_dead_letters(client: redis.Redis, dlq: str) -> list[dict[str, str]]:
    """Every dlq entry as text fields (plus ``_id``); tolerant of any field layout."""
    rows: Any = client.xrange(dlq)
    letters = []
    for entry_id, fields in rows:
        letter = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        letter["_id"] = entry_id.decode()
        letters.append(letter)
    return letters


def _explains(planted: Planted, letter: Mapping[str, str]) -> bool:
    """Does ``letter`` come from ``planted``? By source entry id first (``p<N>/<id>``), else
    by the poison key, else (for the progress entry, which has no key) by its absurd ts."""
    source = letter.get("source", "")
    if source.endswith(planted.entry_id) and f"p{planted.partition}" in source:
        return True
    if planted.key:
        return letter.get("key") == planted.key
    return letter.get("ts") == str(planted.ts)


def classify(letters: Sequence[Mapping[str, str]], planted: Sequence[Planted]) -> DeadLetters:
    out = DeadLetters()
    for letter in letters:
        owner = next((i for i, p in enumerate(planted) if _explains(p, letter)), None)
        if owner is None:
            out.unexpected.append(dict(letter))
        elif owner in out.matched:
            out.duplicates.append(dict(letter))
        else:
            out.matched[owner] = dict(letter)
    out.missing = [p for i, p in enumerate(planted) if i not in out.matched]
    return out
