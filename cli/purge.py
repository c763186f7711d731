"""``searchsync purge-key KEY [--yes] [--json]``: remove one key's data from Redis.

Entries and dead letters hold whole documents (names, emails, addresses); a
request to erase one person's data must not wait for the retentions
(STREAM_RETENTION_SECONDS, DLQ_RETENTION_SECONDS). The command looks in the
key's partition stream only (``crc32(key) % STREAM_PARTITIONS``: no other
stream holds its changes) for the entries that carry KEY — ``u``/``d`` entries
whose ``key`` is KEY, ``b`` entries with a ``u:KEY`` or ``d:KEY`` field — and in
``dlq`` for the letters of KEY, prints the plan, asks (unless ``--yes``), then
XDELs them.

Only entries the consumer group has acknowledged go (:func:`acknowledged`): an
entry still pending or not yet delivered is on its way to OpenSearch, and
deleting it would lose that change; it is kept and listed, and a second run
later removes it. The check is made again at deletion time inside one script
(:data:`_DELETE`), so a replay or a reader that moved the group between the plan
and the deletion cannot make it delete an entry that is no longer acknowledged.
A ``b`` entry holds other keys' changes of the same timestamp: they go with it
(they are indexed already, but ``searchsync replay`` can no longer re-send
them), and the plan says how many for each such entry.

Exit codes: 0 everything found was deleted (or nothing was found); 1 something
was kept (not acknowledged yet: run again later) or the plan was not
confirmed; 2 an empty KEY or settings that disagree with the streams' layout
(then the key's partition would be the wrong one). Every Redis command has
common.redis_client's 10 s socket timeout; the scans are one XRANGE per 1000
entries, the deletion one script per 1000 entries and one pipeline per 1000
letters. Redis errors reach cli.main (exit 3).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..common.config import Settings
from ..common.entries import BATCH, COUNT, DELETE, DOC, KEY, OP, OP_NAMES, TS, UPSERT
from ..common.keys import Keys
from ..common.meta import mismatch
from ..common.partition import partition_of
from ..common.pipelines import execute_pipeline
from ..common.redis_client import connect_redis
from ..common.streams import LUA_LAST_DELIVERED
from .terminal import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, Progress, confirm, print_json

__all__ = [
    "Done",
    "Found",
    "GroupState",
    "Plan",
    "acknowledged",
    "carries",
    "exit_code",
    "letter_carries",
    "make_plan",
    "plan_lines",
    "register",
    "result_lines",
    "result_rows",
]

EntryId = tuple[int, int]

# XRANGE page, ids per deletion script and letters per XDEL pipeline: bounded round
# trips, and a script that never blocks Redis for long
_PAGE: Final = 1000

# What happened to an entry or a letter (the ``outcome`` of --json rows).
DELETED: Final = "deleted"
KEPT: Final = "kept"  # not acknowledged by the group
GONE: Final = "gone"  # no longer there at deletion time (retention, another purge)
NOT_CONFIRMED: Final = "not confirmed"
_KEPT_WHY: Final = "not acknowledged yet (still on the way to OpenSearch)"


class GroupState(msgspec.Struct, frozen=True):
    """The consumer group's position on one partition stream."""

    last_delivered: EntryId
    lowest_pending: EntryId | None  # None: nothing pending


class Found(msgspec.Struct, frozen=True):
    """One entry of the partition stream that carries the key."""

    id: str
    op: str  # upsert, delete or batch
    ts: int | None  # None: the entry's ts is unreadable
    others: int  # other keys' changes in the same entry (a ``b`` entry's); 0 for u/d


class Plan(msgspec.Struct, frozen=True):
    """What a purge of one key would do: ``deletable`` entries (acknowledged), ``kept``
    entries (not acknowledged), and the ids of the key's letters."""

    key: str
    partition: int
    stream: str
    dlq: str
    deletable: list[Found]
    kept: list[Found]
    letters: list[str]

    @property
    def others(self) -> int:
        return sum(found.others for found in self.deletable)


class Done(msgspec.Struct, frozen=True):
    """What the deletion did: entry ids deleted, kept (no longer acknowledged at deletion
    time) and gone (not there any more), and the letters deleted and gone."""

    deleted: frozenset[str] = frozenset()
    kept: frozenset[str] = frozenset()
    gone: frozenset[str] = frozenset()
    letters_deleted: frozenset[str] = frozenset()
    letters_gone: frozenset[str] = frozenset()


# pure logic


def parse_id(raw: bytes | str) -> EntryId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _own_fields(key: bytes) -> tuple[bytes, bytes]:
    return UPSERT + b":" + key, DELETE + b":" + key


def carries(fields: Mapping[bytes, bytes], key: bytes) -> int | None:
    """None when the entry ``fields`` holds no change of ``key``; otherwise how many
    OTHER keys' changes it holds (0 for a ``u``/``d`` entry, the other ``u:``/``d:``
    fields of a ``b`` entry). Judged on the raw fields, so a malformed entry that
    still names the key counts too: its data is the key's all the same."""
    op = fields.get(OP)
    if op in (UPSERT, DELETE):
        return 0 if fields.get(KEY) == key else None
    if op != BATCH:
        return None
    own = _own_fields(key)
    if not any(name in fields for name in own):
        return None
    return sum(1 for name in fields if name not in (TS, OP, COUNT) and name not in own)


def _loose_ts(fields: Mapping[bytes, bytes]) -> int | None:
    try:
        return int(fields[TS])
    except (KeyError, ValueError):
        return None


def found_entry(entry_id: str, fields: Mapping[bytes, bytes], key: bytes) -> Found | None:
    """The entry as a :class:`Found` when it carries ``key`` (:func:`carries`), else None."""
    others = carries(fields, key)
    if others is None:
        return None
    op = fields.get(OP, b"")
    name = OP_NAMES.get(op, op.decode(errors="backslashreplace"))
    return Found(entry_id, name, _loose_ts(fields), others)


def letter_carries(fields: Mapping[bytes, bytes], key: bytes) -> bool:
    """Whether the dead letter ``fields`` holds ``key``'s data: its ``key`` is ``key``,
    or it is a whole unreadable ``b`` entry (no key; its fields as a JSON object in
    ``doc``, consumer.batch) with a ``u:KEY`` or ``d:KEY`` field."""
    if fields.get(KEY) == key:
        return True
    if fields.get(KEY) or fields.get(OP) != BATCH:
        return False
    try:
        kept = msgspec.json.decode(fields.get(DOC, b""))
    except msgspec.DecodeError:
        return False
    if not isinstance(kept, dict):
        return False
    # common.entries.raw_fields_json wrote the names as text, bytes escaped this way
    return any(name.decode(errors="backslashreplace") in kept for name in _own_fields(key))


def acknowledged(entry_id: EntryId, group: GroupState | None) -> bool:
    """Whether the group has acknowledged ``entry_id``: delivered (not after its
    last-delivered-id) and below its lowest pending id. Without a group nothing was
    delivered. Conservative: an acknowledged entry above a pending one counts as not
    acknowledged (kept until the pending one is done), which never deletes a change
    that is still on its way."""
    if group is None or entry_id > group.last_delivered:
        return False
    return group.lowest_pending is None or entry_id < group.lowest_pending


def make_plan(
    found: Iterable[Found],
    group: GroupState | None,
    letters: Sequence[str],
    *,
    key: str,
    partition: int,
    stream: str,
    dlq: str,
) -> Plan:
    """Split ``found`` into the entries to delete (acknowledged) and those kept."""
    deletable: list[Found] = []
    kept: list[Found] = []
    for entry in found:
        (deletable if acknowledged(parse_id(entry.id), group) else kept).append(entry)
    return Plan(key, partition, stream, dlq, deletable, kept, list(letters))


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


def _described(entry: Found) -> str:
    ts = "?" if entry.ts is None else str(entry.ts)
    return f"{entry.op} at ts {ts}"


def plan_lines(plan: Plan) -> list[str]:
    """What the operator confirms: how many entries and letters go, and for each ``b``
    entry how many other keys' changes go with it; what is kept, and why."""
    entries = _plural(len(plan.deletable), "acknowledged entry", "acknowledged entries")
    lines = [
        f"searchsync purge-key will delete the data of key {plan.key!r} (partition "
        f"p{plan.partition}): {entries} of {plan.stream} and "
        f"{_plural(len(plan.letters), 'dead letter')} of {plan.dlq}."
    ]
    for entry in plan.deletable:
        if entry.others:
            lines.append(
                f"  entry {entry.id} ({_described(entry)}) also holds "
                f"{_plural(entry.others, 'change')} of other keys, which go with it "
                "(already indexed; searchsync replay can no longer re-send them)."
            )
    if sum(1 for entry in plan.deletable if entry.others) > 1:
        lines.append(
            f"In all {_plural(plan.others, 'change')} of other keys go with the key's entries."
        )
    if plan.kept:
        are, stay = ("is", "stays") if len(plan.kept) == 1 else ("are", "stay")
        lines.append(
            f"{_plural(len(plan.kept), 'entry', 'entries')} of the key {are} {_KEPT_WHY} "
            f"and {stay}: run searchsync purge-key again later."
        )
    lines.append("Entries and letters written after this scan are not included.")
    return lines


def result_rows(plan: Plan, done: Done | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The entries and letters with their outcome (``done`` None: not confirmed)."""
    entries: list[dict[str, Any]] = []
    for entry in plan.deletable:
        if done is None:
            outcome = NOT_CONFIRMED
        elif entry.id in done.deleted:
            outcome = DELETED
        elif entry.id in done.kept:
            outcome = KEPT
        else:
            outcome = GONE
        entries.append(_entry_row(entry, outcome))
    entries += [_entry_row(entry, KEPT) for entry in plan.kept]
    entries.sort(key=lambda row: parse_id(row["id"]))
    letters: list[dict[str, Any]] = []
    for letter in plan.letters:
        if done is None:
            outcome = NOT_CONFIRMED
        elif letter in done.letters_deleted:
            outcome = DELETED
        else:
            outcome = GONE
        letters.append({"id": letter, "outcome": outcome})
    return entries, letters


def _entry_row(entry: Found, outcome: str) -> dict[str, Any]:
    return {
        "id": entry.id,
        "op": entry.op,
        "ts": entry.ts,
        "other_changes": entry.others,
        "outcome": outcome,
    }


def exit_code(plan: Plan, done: Done | None) -> int:
    """0 when every entry and letter found is gone from Redis; 1 when one is kept or the
    plan was not confirmed."""
    if done is None:
        return EXIT_PROBLEM if plan.deletable or plan.letters or plan.kept else EXIT_OK
    return EXIT_PROBLEM if plan.kept or done.kept else EXIT_OK


def result_lines(plan: Plan, done: Done | None) -> list[str]:
    """The human report: one line per entry and letter with its outcome, then a summary."""
    entries, letters = result_rows(plan, done)
    if not entries and not letters:
        return [f"no entries of key {plan.key!r} in {plan.stream}, no letters in {plan.dlq}"]
    lines: list[str] = []
    for row in entries:
        ts = "?" if row["ts"] is None else row["ts"]
        text = f"{row['outcome']:<13} entry  {row['id']:<22} {row['op']} at ts {ts}"
        if row["other_changes"]:
            text += f" (with {_plural(row['other_changes'], 'change')} of other keys)"
        if row["outcome"] == KEPT:
            text += f": {_KEPT_WHY}"
        lines.append(text)
    lines += [f"{row['outcome']:<13} letter {row['id']}" for row in letters]
    if done is None:
        return lines
    others = sum(row["other_changes"] for row in entries if row["outcome"] == DELETED)
    deleted = sum(row["outcome"] == DELETED for row in entries)
    summary = (
        f"deleted {_plural(deleted, 'entry', 'entries')}"
        + (f" (with {_plural(others, 'change')} of other keys)" if others else "")
        + f" and {_plural(len(done.letters_deleted), 'letter')} of key {plan.key!r}"
    )
    kept = sum(row["outcome"] == KEPT for row in entries)
    if kept:
        them = "it" if kept == 1 else "them"
        summary += (
            f"; {kept} kept, not acknowledged yet: run searchsync purge-key again once the "
            f"consumers have acknowledged {them}"
        )
    lines.append(summary)
    return lines


# Redis


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


async def _scan_stream(redis: Redis, stream: str, key: bytes) -> list[Found]:
    """The entries of ``stream`` that carry ``key``, oldest first (XRANGE in pages)."""
    found: list[Found] = []
    total = int(await redis.xlen(stream))
    progress = Progress("searchsync purge-key")
    read = 0
    start = "-"
    try:
        while True:
            page: Any = await redis.xrange(stream, min=start, max="+", count=_PAGE)
            for raw_id, fields in page:
                entry = found_entry(_text(raw_id), fields, key)
                if entry is not None:
                    found.append(entry)
            read += len(page)
            progress.update(f"entries of {stream} read", read, total)
            if len(page) < _PAGE:
                return found
            start = "(" + _text(page[-1][0])
    finally:
        progress.done()


async def _scan_letters(redis: Redis, dlq: str, key: bytes) -> list[str]:
    """The ids of the letters that hold ``key``'s data, oldest first."""
    ids: list[str] = []
    start = "-"
    while True:
        page: Any = await redis.xrange(dlq, min=start, max="+", count=_PAGE)
        ids += [_text(raw_id) for raw_id, fields in page if letter_carries(fields, key)]
        if len(page) < _PAGE:
            return ids
        start = "(" + _text(page[-1][0])


async def _group_state(redis: Redis, stream: str, group: str) -> GroupState | None:
    """The group's last-delivered-id and lowest pending id (None: no stream or group)."""
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return None
    mine = next((g for g in groups if _text(g["name"]) == group), None)
    if mine is None:
        return None
    summary: Any = await redis.xpending(stream, group)
    lowest = parse_id(summary["min"]) if summary.get("pending") else None
    return GroupState(parse_id(mine["last-delivered-id"]), lowest)


# KEYS[1] the partition stream; ARGV[1] the group, ARGV[2..] entry ids. Deletes each id
# the group has acknowledged NOW (cli.purge.acknowledged, read again here so nothing
# between the plan and this script can make it delete an entry on its way); returns
# {deleted, kept, gone}. Ids compare as decimal strings (length, then text): exact
# where Lua's doubles are not (a replay's SETID leaves sequence numbers near 2^64).
# Deleting at or below the last-delivered-id leaves the group's lag computable except
# for the entry AT it (XINFO then says lag nil until the group reads the next entry, a
# progress entry within PROGRESS_INTERVAL_MS while the producer runs; common.buffer
# then counts from the counters).
_DELETE: Final = (
    LUA_LAST_DELIVERED
    + """
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then
    if #am ~= #bm then return #am < #bm end
    return am < bm
  end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
local last = nil
if ok then last = last_delivered(groups, ARGV[1]) end
local lowest = nil
if last then
  local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
  if tonumber(summary[1]) > 0 then lowest = summary[2] end
end
local deleted, kept, gone = {}, {}, {}
for i = 2, #ARGV do
  local id = ARGV[i]
  if last and not before(last, id) and (not lowest or before(id, lowest)) then
    if redis.call('XDEL', KEYS[1], id) == 1 then
      deleted[#deleted + 1] = id
    else
      gone[#gone + 1] = id
    end
  else
    kept[#kept + 1] = id
  end
end
return {deleted, kept, gone}
"""
)


async def _delete_entries(
    redis: Redis, stream: str, group: str, ids: Sequence[str]
) -> tuple[set[str], set[str], set[str]]:
    """XDEL the ``ids`` the group has acknowledged, :data:`_PAGE` ids per script call;
    returns the ids deleted, kept (not acknowledged) and gone."""
    script = redis.register_script(_DELETE)
    deleted: set[str] = set()
    kept: set[str] = set()
    gone: set[str] = set()
    for start in range(0, len(ids), _PAGE):
        reply: Any = await script(keys=[stream], args=[group, *ids[start : start + _PAGE]])
        deleted.update(_text(i) for i in reply[0])
        kept.update(_text(i) for i in reply[1])
        gone.update(_text(i) for i in reply[2])
    return deleted, kept, gone


async def _delete_letters(redis: Redis, dlq: str, ids: Sequence[str]) -> tuple[set[str], set[str]]:
    """XDEL each letter; returns the ids deleted and those already gone (trimmed)."""
    deleted: set[str] = set()
    gone: set[str] = set()
    for start in range(0, len(ids), _PAGE):
        chunk = ids[start : start + _PAGE]
        async with redis.pipeline(transaction=False) as pipe:
            for letter in chunk:
                pipe.xdel(dlq, letter)
            replies: list[Any] = await execute_pipeline(pipe)
        for letter, removed in zip(chunk, replies, strict=True):
            (deleted if int(removed) else gone).add(letter)
    return deleted, gone


def _key_bytes(text: str) -> bytes:
    # surrogateescape: a key that is not UTF-8 can still be given byte for byte
    return text.encode("utf-8", "surrogateescape")


async def cmd_purge_key(settings: Settings, args: argparse.Namespace) -> int:
    key = _key_bytes(args.key)
    if not key:
        print("searchsync purge-key: KEY is empty", file=sys.stderr)
        return EXIT_USAGE
    keys = Keys(settings.view_name, settings.stream_partitions)
    partition = partition_of(key, settings.stream_partitions)
    stream = keys.stream(partition)
    group = settings.consumer_group
    redis = connect_redis(settings)
    try:
        stored: Any = await redis.hgetall(keys.meta)
        problem = mismatch(stored, settings, keys.meta) if stored else None
        if problem is not None:  # the key's partition would be the wrong stream
            print(f"searchsync purge-key: {problem}", file=sys.stderr)
            return EXIT_USAGE
        found = await _scan_stream(redis, stream, key)
        group_state = await _group_state(redis, stream, group)
        letters = await _scan_letters(redis, keys.dlq, key)
        shown = key.decode(errors="backslashreplace")
        plan = make_plan(
            found, group_state, letters, key=shown, partition=partition, stream=stream, dlq=keys.dlq
        )
        done: Done | None = Done()
        if plan.deletable or plan.letters:
            if args.yes or confirm(plan_lines(plan), json_mode=args.json):
                done = await _purge(redis, plan, group)
            else:
                done = None
    finally:
        await redis.aclose()
    _output(args, plan, done)
    return exit_code(plan, done)


async def _purge(redis: Redis, plan: Plan, group: str) -> Done:
    deleted, kept, gone = await _delete_entries(
        redis, plan.stream, group, [entry.id for entry in plan.deletable]
    )
    letters_deleted, letters_gone = await _delete_letters(redis, plan.dlq, plan.letters)
    return Done(
        frozenset(deleted),
        frozenset(kept),
        frozenset(gone),
        frozenset(letters_deleted),
        frozenset(letters_gone),
    )


def _output(args: argparse.Namespace, plan: Plan, done: Done | None) -> None:
    if not args.json:
        print("\n".join(result_lines(plan, done)))
        if done is None:
            print("not confirmed: nothing was deleted", file=sys.stderr)
        return
    entries, letters = result_rows(plan, done)
    print_json(
        {
            "key": plan.key,
            "partition": plan.partition,
            "stream": plan.stream,
            "dlq": plan.dlq,
            "confirmed": done is not None,
            "deleted_entries": sum(row["outcome"] == DELETED for row in entries),
            "deleted_other_changes": sum(
                row["other_changes"] for row in entries if row["outcome"] == DELETED
            ),
            "kept_entries": sum(row["outcome"] == KEPT for row in entries),
            "deleted_letters": sum(row["outcome"] == DELETED for row in letters),
            "entries": entries,
            "letters": letters,
        }
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "purge-key",
        help="delete one key's acknowledged entries from its partition stream and its "
        "dead letters (personal data)",
    )
    p.add_argument("key", metavar="KEY", help="the key, as in the view's key column")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print one JSON object (prompts on stderr)")
    p.set_defaults(run=cmd_purge_key)
