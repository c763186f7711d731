"""``searchsync dlq list | show | retry | purge``: the dead-letter stream ``searchsync:<view>:dlq``.

dlq list [--limit N] [--json]           the newest N letters (default 50) and the total
dlq show ID [--json]                    one letter in full; exit 1 if there is no such letter
dlq retry (ID… | --all) [--yes] [--json]
                                        re-read each letter's key from the view and append
                                        its current row (an upsert, or a delete if it has
                                        none) to its partition stream, then delete the
                                        letter; exit 1 if any letter stays
dlq purge [--before T] [--yes] [--json] delete letters (all, or those dead-lettered before
                                        T: an ISO time or an entry id)

What a retry decides for each letter is common.dlq; reading the rows at a
Materialize timestamp is producer.lookup; the entries go through the producer's
own writer (producer.writer.StreamWriter: the high-water mark raised first, the
``written:p<N>`` counts with the XADDs). A letter is deleted only after its
entry is in the stream: a crash in between leaves the letter, and retrying it
again writes the same row at a newer version, which is harmless.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..common import dlq
from ..common.config import Settings
from ..common.entries import DeadLetter
from ..common.keys import Keys
from ..common.meta import StreamLayoutError, ensure_meta, mismatch
from ..common.pipelines import execute_pipeline
from ..common.redis_client import connect_redis
from ..producer import lookup
from ..producer.batches import build_entries
from ..producer.rows import key_problem
from ..producer.writer import ReplicaWaitTimeout, StreamWriter
from .terminal import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, Progress, confirm, print_json

__all__ = ["register"]

Letter = tuple[str, DeadLetter]
# XRANGE page size, and keys per view read (one SUBSCRIBE each).
_PAGE = 1000
_KEYS_PER_READ = 500


def _id_text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _id_arg(entry_id: tuple[int, int]) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


async def _all_letters(redis: Redis, name: str) -> list[Letter]:
    """Every letter, oldest first (XRANGE in pages), without its document: a retry never
    uses it, and a dlq after a bad mapping may hold every document of the view."""
    out: list[Letter] = []
    start = "-"
    while True:
        page: Any = await redis.xrange(name, min=start, max="+", count=_PAGE)
        out += [
            (_id_text(i), msgspec.structs.replace(dlq.read_letter(fields), doc=None))
            for i, fields in page
        ]
        if len(page) < _PAGE:
            return out
        start = "(" + _id_text(page[-1][0])


async def _letters_by_id(redis: Redis, name: str, ids: Sequence[str]) -> dict[str, DeadLetter]:
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(name, min=entry_id, max=entry_id, count=1)
        replies: list[Any] = await execute_pipeline(pipe)
    pairs = zip(ids, replies, strict=True)
    return {entry_id: dlq.read_letter(reply[0][1]) for entry_id, reply in pairs if reply}


def _parse_ids(texts: Sequence[str]) -> list[str]:
    """Normalised ids; raises ValueError for one that is not an entry id."""
    return [_id_arg(dlq.parse_entry_id(text)) for text in texts]


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    keys = Keys(settings.view_name, settings.stream_partitions)
    redis = connect_redis(settings)
    try:
        total = int(await redis.xlen(keys.dlq))
        raw: Any = await redis.xrevrange(keys.dlq, count=args.limit) if args.limit else []
    finally:
        await redis.aclose()
    rows = [
        dlq.letter_row(_id_text(i), dlq.read_letter(f), settings.stream_partitions) for i, f in raw
    ]
    if args.json:
        print_json({"dlq": keys.dlq, "total": total, "order": dlq.LIST_ORDER, "letters": rows})
    else:
        print("\n".join(dlq.render_table(keys.dlq, rows, total)))
    return EXIT_OK


async def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    keys = Keys(settings.view_name, settings.stream_partitions)
    try:
        (entry_id,) = _parse_ids([args.id])
    except ValueError as error:
        print(f"searchsync dlq show: {error}", file=sys.stderr)
        return EXIT_USAGE
    redis = connect_redis(settings)
    try:
        found = await _letters_by_id(redis, keys.dlq, [entry_id])
    finally:
        await redis.aclose()
    letter = found.get(entry_id)
    if letter is None:
        if args.json:
            print_json({"dlq": keys.dlq, "id": entry_id, "found": False})
        print(f"searchsync dlq show: no letter {entry_id} in {keys.dlq}", file=sys.stderr)
        return EXIT_PROBLEM
    row = dlq.letter_row(entry_id, letter, settings.stream_partitions)
    if args.json:
        kind, value = dlq.shown_document(letter.doc)
        fields = msgspec.structs.asdict(row)
        print_json({"found": True, **fields, "document_format": kind, "document": value})
    else:
        print("\n".join(dlq.render_letter(row, letter.doc)))
    return EXIT_OK


class _Report:
    """Per-letter outcomes of a retry, in the order the letters were selected."""

    def __init__(self, partitions: int, ids: Sequence[str]) -> None:
        self._partitions = partitions
        # placeholders keep the selection's order whatever order outcomes arrive in
        self.lines: dict[str, dict[str, Any]] = {entry_id: {} for entry_id in ids}

    def add(
        self, entry_id: str, letter: DeadLetter | None, outcome: dlq.Outcome, detail: str
    ) -> None:
        row = dlq.letter_row(entry_id, letter, self._partitions) if letter else None
        self.lines[entry_id] = {
            "id": entry_id,
            "key": row.key if row else None,
            "partition": row.partition if row else None,
            "outcome": outcome.value,
            "detail": detail,
        }

    def rows(self) -> list[dict[str, Any]]:
        return [line for line in self.lines.values() if line]

    def counts(self) -> dict[str, int]:
        out = {outcome.value: 0 for outcome in dlq.Outcome}
        for line in self.rows():
            out[line["outcome"]] += 1
        return out

    @property
    def all_removed(self) -> bool:
        return all(dlq.Outcome(x["outcome"]).removes_letter for x in self.rows())


def _select(
    ids: Sequence[str], found: dict[str, DeadLetter], report: _Report
) -> dict[str, list[Letter]]:
    """The retryable letters grouped by key; the others go to ``report`` at once."""
    by_key: dict[str, list[Letter]] = {}
    for entry_id in ids:
        letter = found.get(entry_id)
        if letter is None:
            report.add(entry_id, None, dlq.Outcome.NOT_FOUND, "no such letter")
            continue
        why = dlq.unretryable(letter, key_problem)
        if why is not None:
            report.add(entry_id, letter, dlq.Outcome.NOT_RETRYABLE, why)
            continue
        by_key.setdefault(letter.key.decode(), []).append((entry_id, letter))
    return by_key


async def _retry_keys(
    settings: Settings,
    redis: Redis,
    keys: Keys,
    by_key: dict[str, list[Letter]],
    report: _Report,
) -> None:
    """Read, write and delete, :data:`_KEYS_PER_READ` keys at a time.

    Raises what producer.lookup.read_current and StreamWriter.write raise; letters
    are deleted only after their chunk's entries were written.
    """
    # REDIS_WAIT_REPLICAS as the producer's: on a cluster the entry and the letter are on
    # different nodes, so only a waited entry may lose its letter (XDEL) safely
    writer = StreamWriter(
        redis,
        keys,
        progress_interval_ms=settings.progress_interval_ms,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    progress = Progress("searchsync dlq retry")
    names = list(by_key)
    conn = await lookup.connect(settings)
    try:
        for start in range(0, len(names), _KEYS_PER_READ):
            chunk = names[start : start + _KEYS_PER_READ]
            current = await lookup.read_current(
                conn, view=settings.view_name, key_column=settings.key_column, keys=chunk
            )
            changes: list[tuple[int, bytes, bytes | None]] = []
            done: list[str] = []
            for key in chunk:
                letters = by_key[key]
                decision = dlq.decide(
                    letter_ts=max(letter.ts for _, letter in letters),
                    docs=current.docs[key],
                    read_ts=current.ts,
                    max_document_bytes=settings.max_document_bytes,
                )
                if decision.op is not None:
                    changes.append((current.ts, key.encode(), decision.doc))
                for entry_id, letter in letters:
                    report.add(entry_id, letter, decision.outcome, decision.detail)
                    if decision.outcome.removes_letter:
                        done.append(entry_id)
            if changes:
                entries = build_entries(
                    changes, settings.stream_partitions, max_bytes=settings.max_entry_bytes
                )
                await writer.write(entries, high_water=current.ts)
            if done:
                await redis.xdel(keys.dlq, *done)
            progress.update("keys", start + len(chunk), len(names))
    finally:
        progress.done()
        await conn.close()


def _retry_output(args: argparse.Namespace, name: str, report: _Report, confirmed: bool) -> None:
    counts = report.counts()
    if args.json:
        print_json(
            {
                "dlq": name,
                "confirmed": confirmed,
                "counts": counts,
                "letters": report.rows(),
            }
        )
        return
    for line in report.rows():
        print(f"{line['id']:<17} {line['key'] or '-':<24} {line['outcome']}: {line['detail']}")
    print(", ".join(f"{count} {outcome}" for outcome, count in counts.items() if count))
    if counts[dlq.Outcome.RETRIED] or counts[dlq.Outcome.GONE_FROM_VIEW]:
        print(
            "The consumers apply the appended changes; one OpenSearch rejects again comes "
            "back as a new letter (searchsync dlq list)."
        )


async def _retry(
    settings: Settings, args: argparse.Namespace, redis: Redis, keys: Keys, ids: list[str]
) -> tuple[_Report, bool]:
    """Select, confirm and retry; returns the report and whether every letter that could
    be retried was (confirmed, or nothing to confirm). Raises StreamLayoutError,
    redis and psycopg errors."""
    stored: Any = await redis.hgetall(keys.meta)
    problem = mismatch(stored, settings, keys.meta) if stored else None
    if problem is not None:
        raise problem
    if args.all:
        letters = await _all_letters(redis, keys.dlq)
        ids, found = [i for i, _ in letters], dict(letters)
    else:
        found = await _letters_by_id(redis, keys.dlq, ids)
    report = _Report(settings.stream_partitions, ids)
    by_key = _select(ids, found, report)
    if not by_key:
        return report, True
    if args.yes or confirm(_retry_plan(settings, by_key, report), json_mode=args.json):
        await ensure_meta(redis, keys, settings)  # records the layout if no process has
        await _retry_keys(settings, redis, keys, by_key, report)
        return report, True
    for key_letters in by_key.values():
        for entry_id, letter in key_letters:
            report.add(entry_id, letter, dlq.Outcome.NOT_CONFIRMED, "nothing was done")
    return report, False


async def cmd_retry(settings: Settings, args: argparse.Namespace) -> int:
    keys = Keys(settings.view_name, settings.stream_partitions)
    if bool(args.ids) == args.all:
        print("searchsync dlq retry: give letter ids or --all (not both)", file=sys.stderr)
        return EXIT_USAGE
    try:
        ids = _parse_ids(args.ids)
    except ValueError as error:
        print(f"searchsync dlq retry: {error}", file=sys.stderr)
        return EXIT_USAGE
    redis = connect_redis(settings)
    try:
        report, confirmed = await _retry(settings, args, redis, keys, ids)
    except StreamLayoutError as error:
        print(f"searchsync dlq retry: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ResponseError as error:  # e.g. OOM: that chunk's letters were not deleted
        print(
            f"searchsync dlq retry: Redis refused a write ({error}); letters whose entries "
            "were not written stay in the dlq: run the retry again once that is fixed",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    except ReplicaWaitTimeout as error:  # the chunk's entries may be written, not its XDEL
        print(
            f"searchsync dlq retry: {error}; letters whose entries were not on enough "
            "replicas stay in the dlq: run the retry again once the replicas are back",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    finally:
        await redis.aclose()
    if not report.rows() and not args.json:
        print(f"{keys.dlq}: no dead letters")
        return EXIT_OK
    _retry_output(args, keys.dlq, report, confirmed)
    return EXIT_OK if report.all_removed else EXIT_PROBLEM


def _retry_plan(settings: Settings, by_key: dict[str, list[Letter]], report: _Report) -> list[str]:
    letters = sum(len(v) for v in by_key.values())
    lines = [
        f"searchsync dlq retry will re-read {len(by_key)} key(s) of {settings.view_name} at "
        "one Materialize timestamp, append each one's current row (an upsert, or a delete "
        "if it has no row) to its partition stream, then delete their "
        f"{letters} letter(s); a key that is still bad keeps its letters."
    ]
    kept = len(report.rows())
    if kept:
        lines.append(f"{kept} selected letter(s) cannot be retried and stay (see below).")
    return lines


async def cmd_purge(settings: Settings, args: argparse.Namespace) -> int:
    keys = Keys(settings.view_name, settings.stream_partitions)
    try:
        before = dlq.parse_before(args.before) if args.before else None
    except ValueError as error:
        print(f"searchsync dlq purge: {error}", file=sys.stderr)
        return EXIT_USAGE
    redis = connect_redis(settings)
    try:
        total = int(await redis.xlen(keys.dlq))
        last: Any = await redis.xrevrange(keys.dlq, count=1)
        cut = dlq.id_after(dlq.parse_entry_id(_id_text(last[0][0]))) if last else None
        if cut is not None and before is not None:
            cut = min(cut, before)
        matched = await _count_below(redis, keys.dlq, cut) if cut else 0
        confirmed = matched > 0 and (
            args.yes or confirm(_purge_plan(keys.dlq, matched, total, before), json_mode=args.json)
        )
        deleted = 0
        if confirmed and cut is not None:
            # exact MINID (no ~): letters written after the count above are kept
            deleted = int(await redis.xtrim(keys.dlq, minid=_id_arg(cut), approximate=False))
    finally:
        await redis.aclose()
    if args.json:
        print_json(
            {
                "dlq": keys.dlq,
                "before": _id_arg(before) if before else None,
                "matched": matched,
                "confirmed": confirmed,
                "deleted": deleted,
                "remaining": total - deleted,
            }
        )
    elif matched == 0:
        held = f"{total} letter{'s' if total != 1 else ''}"
        print(f"{keys.dlq}: nothing to purge ({held}, none before the bound)")
    elif confirmed:
        print(f"deleted {deleted} dead letters from {keys.dlq}; {total - deleted} remain")
    else:
        print("not confirmed: nothing was deleted", file=sys.stderr)
    return EXIT_OK if matched == 0 or confirmed else EXIT_PROBLEM


async def _count_below(redis: Redis, name: str, cut: tuple[int, int]) -> int:
    """How many letters have an id below ``cut`` (XRANGE in pages)."""
    count = 0
    start = "-"
    while True:
        page: Any = await redis.xrange(name, min=start, max="(" + _id_arg(cut), count=_PAGE)
        count += len(page)
        if len(page) < _PAGE:
            return count
        start = "(" + _id_text(page[-1][0])


def _purge_plan(name: str, matched: int, total: int, before: tuple[int, int] | None) -> list[str]:
    bound = f" dead-lettered before {dlq.entry_time(_id_arg(before))}" if before else ""
    return [f"searchsync dlq purge will delete {matched} of the {total} letters{bound} in {name}."]


def _limit(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dlq", help="list, show, retry or purge dead letters")
    dlq_sub = p.add_subparsers(dest="dlq_command", required=True)
    c = dlq_sub.add_parser("list", help=f"the newest letters ({dlq.LIST_ORDER}) and the total")
    c.add_argument("--limit", type=_limit, default=50, help="letters shown, default 50")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(run=cmd_list)
    c = dlq_sub.add_parser("show", help="one letter in full; exit 1 if there is none")
    c.add_argument("id", help="the letter's entry id (from dlq list)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(run=cmd_show)
    c = dlq_sub.add_parser(
        "retry", help="write the letters' keys' current rows from the view, then delete them"
    )
    c.add_argument("ids", nargs="*", metavar="ID", help="letter ids (from dlq list)")
    c.add_argument("--all", action="store_true", help="every letter")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c.add_argument("--json", action="store_true", help="print one JSON object (prompts on stderr)")
    c.set_defaults(run=cmd_retry)
    c = dlq_sub.add_parser("purge", help="delete letters, all or those before T")
    c.add_argument("--before", metavar="T", help="an ISO time or an entry id")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    c.add_argument("--json", action="store_true", help="print one JSON object (prompts on stderr)")
    c.set_defaults(run=cmd_purge)
