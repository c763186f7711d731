"""producer/polling.py: digests of rows, and one poll's changes from two polls' digests."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from hypothesis import example, given, settings
from hypothesis import strategies as st

from searchsync.producer.documents import DocumentEncoder
from searchsync.producer.polling import PollPlan, RowScan, plan_poll, poll_steps

Row = tuple[str, int]


def doc(row: Sequence[object], version: int) -> bytes:
    """A stand-in for DocumentEncoder.encode: any pure encoding of row and version."""
    body = json.dumps({"row": list(row)}, separators=(",", ":"))[:-1]
    return f'{body},"sync_version":{version}}}'.encode()


def scan_of(previous: Mapping[str, int], version: int, rows: Sequence[tuple[str, Row]]) -> RowScan:
    """What Poller.poll_once does with the rows it reads: add each, then settle the
    keys read twice with their rows read again."""
    scan = RowScan(previous, version, doc)
    for key, row in rows:
        scan.add(key, row)
    for key in sorted(scan.repeated):
        scan.settle(key, [row for k, row in rows if k == key])
    return scan


def test_changed_and_new_keys_upsert_vanished_keys_delete() -> None:
    plan = plan_poll(100, {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4})
    assert plan == PollPlan(100, upserts=["b", "d"], deletes=["c"], violations=[])


def test_a_violation_is_planned_once_per_new_digest() -> None:
    changed = plan_poll(1, {"k": 1}, {"k": 2}, several={"k"})
    assert changed.violations == ["k"] and changed.upserts == []
    assert plan_poll(2, {"k": 2}, {"k": 2}, several={"k"}) == PollPlan(2, [], [], [])


def test_the_version_does_not_change_a_digest_the_content_does() -> None:
    first = scan_of({}, 100, [("k", ("k", 1))])
    again = scan_of(first.digests, 2_000_000_000_000, [("k", ("k", 1))])
    assert again.digests == first.digests
    assert again.docs == {}  # unchanged: nothing kept to write
    changed = scan_of(first.digests, 101, [("k", ("k", 2))])
    assert changed.digests["k"] != first.digests["k"]
    assert changed.docs == {"k": doc(("k", 2), 101)}


def test_digests_of_real_documents_ignore_only_the_version() -> None:
    encoder = DocumentEncoder(["order_id", "total", "at"], ["plain", "number", "timestamptz"])
    row = ("order:FM-1", "7.50", "2026-01-01 10:00:00+00")
    older = RowScan({}, 5, encoder.encode)
    older.add("order:FM-1", row)
    newer = RowScan(older.digests, 1_796_379_551_865, encoder.encode)
    newer.add("order:FM-1", row)
    assert newer.digests == older.digests and newer.docs == {}
    assert older.docs == {"order:FM-1": encoder.encode(row, 5)}  # at the scan's version
    other = RowScan(older.digests, 6, encoder.encode)
    other.add("order:FM-1", ("order:FM-1", "17.50", row[2]))
    assert other.digests != older.digests
    assert other.docs == {"order:FM-1": encoder.encode(("order:FM-1", "17.50", row[2]), 6)}


def test_a_key_read_twice_is_settled_by_its_rows_read_again() -> None:
    scan = RowScan({}, 3, doc)
    scan.add("k", ("k", 1))
    scan.add("k", ("k", 2))
    assert scan.repeated == {"k"} and "k" not in scan.docs
    scan.settle("k", [("k", 2), ("k", 1)])
    several = scan.digests["k"]
    assert scan.violations == {"k": [doc(("k", 2), 3), doc(("k", 1), 3)]}
    assert scan.repeated == set() and "k" not in scan.docs
    # the rows in another order digest the same; one row, or none, is not a violation
    assert scan_of({}, 9, [("k", ("k", 1)), ("k", ("k", 2))]).digests["k"] == several
    single = RowScan({}, 3, doc)
    single.settle("k", [("k", 2)])
    assert single.digests["k"] != several and single.docs == {"k": doc(("k", 2), 3)}
    gone = RowScan({}, 3, doc)
    gone.add("k", ("k", 1))
    gone.settle("k", [])
    assert gone.digests == {} and gone.docs == {}


def test_a_violation_that_ends_is_upserted() -> None:
    rows = [("k", ("k", 1)), ("k", ("k", 2))]
    violated = scan_of({}, 1, rows)
    resolved = scan_of(violated.digests, 2, rows[:1])
    plan = plan_poll(2, violated.digests, resolved.digests, resolved.violations.keys())
    assert plan.upserts == ["k"] and resolved.docs == {"k": doc(("k", 1), 2)}


KEYS = [f"order:FM-{n}" for n in range(8)]
# A view state: key → its live rows (usually one; none; sometimes two, a violation).
views = st.dictionaries(
    st.sampled_from(KEYS),
    st.lists(st.integers(0, 3), min_size=1, max_size=2).map(lambda vs: sorted(set(vs))),
)


@given(st.lists(views, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_applying_each_poll_to_an_index_yields_the_view(
    states: list[dict[str, list[int]]], rnd: random.Random
) -> None:
    """Polls of random view states, applied to a dict as the index applies entries:
    every single-row key holds its row, vanished keys are gone, a violated key keeps
    what it had, and a key whose rows did not change produces nothing."""
    previous: dict[str, int] = {}
    index: dict[str, list[object]] = {}
    last: dict[str, list[int]] = {}
    for version, state in enumerate(states, start=10):
        rows = [(key, (key, value)) for key, values in state.items() for value in values]
        rnd.shuffle(rows)  # rows of a key need not be adjacent
        scan = scan_of(previous, version, rows)
        plan = plan_poll(version, previous, scan.digests, scan.violations.keys())
        before = dict(index)
        for key in plan.upserts:
            index[key] = json.loads(scan.docs[key])["row"]
        for key in plan.deletes:
            index.pop(key, None)  # a key only ever violated was never indexed
        for key, values in state.items():
            if len(values) == 1:
                assert index[key] == [key, values[0]]
            else:
                assert index.get(key) == before.get(key)
                assert key in plan.violations or last.get(key) == values
        assert set(index) - set(state) == set()
        touched = {*plan.upserts, *plan.deletes, *plan.violations}
        assert {key for key in touched if last.get(key) == state.get(key)} == set()
        previous, last = scan.digests, state


def test_poll_steps_write_entries_before_digests_and_digests_before_the_checkpoint() -> None:
    assert poll_steps(full=False) == ("invalidate", "write", "remember", "commit")
    assert poll_steps(full=True) == ("forget", "write", "reconcile", "remember_at_once", "commit")


class Model:
    """Redis (digest hash, checkpoint), the index and the producer's memory, as the
    steps of :func:`poll_steps` leave them; what the Poller does, with no I/O.

    The index applies ``external_gte`` versions (a delete leaves a tombstone with its
    version, as OpenSearch's ``gc_deletes`` does) and a reconcile marker deletes every
    document older than it. An empty hash does not exist, as in Redis.
    """

    def __init__(self) -> None:
        self.hash: dict[str, int] | None = None
        self.checkpoint: int | None = None
        self.memory: dict[str, int] | None = None
        self.index: dict[str, tuple[int, list[object] | None]] = {}
        self.clock = 100  # mz_now(): only grows

    def documents(self) -> dict[str, list[object]]:
        return {key: doc for key, (_, doc) in self.index.items() if doc is not None}

    def put(self, key: str, version: int, doc: list[object] | None) -> None:
        current = self.index.get(key)
        if current is None or version >= current[0]:
            self.index[key] = (version, doc)

    def set_field(self, key: str, digest: int | None) -> None:
        fields = self.hash or {}
        if digest is None:
            fields.pop(key, None)
        else:
            fields[key] = digest
        self.hash = fields or None

    def forget(self) -> None:
        self.hash = None

    def reconcile(self, version: int) -> None:
        self.index = {key: doc for key, doc in self.index.items() if doc[0] >= version}

    def commit(self, checkpoint: int) -> None:
        self.checkpoint = checkpoint

    def all_of(self, items: list[Callable[[], None]]) -> None:
        for item in items:
            item()

    def items(self, step: str, plan: PollPlan, scan: RowScan) -> list[Callable[[], None]]:
        """The step as the writes Redis applies one after another."""
        v = plan.version
        remember: list[Callable[[], None]] = [
            *(partial(self.set_field, k, scan.digests[k]) for k in plan.upserts + plan.violations),
            *(partial(self.set_field, k, None) for k in plan.deletes),
        ]
        steps: dict[str, list[Callable[[], None]]] = {
            "forget": [self.forget],
            "invalidate": [
                partial(self.set_field, k, -1)
                for k in plan.upserts + plan.deletes + plan.violations
            ],
            "write": [
                *(partial(self.put, k, v, json.loads(scan.docs[k])["row"]) for k in plan.upserts),
                *(partial(self.put, k, v, None) for k in plan.deletes),
            ],
            "reconcile": [partial(self.reconcile, v)],
            "remember": remember,
            "remember_at_once": [partial(self.all_of, remember)],
            "commit": [partial(self.commit, v + 1)],
        }
        return steps[step]

    def poll(self, view: Mapping[str, int], crash: tuple[str, int] | None) -> None:
        """One poll of ``view``; ``crash`` = (step, writes of it done) kills the
        producer there, if the poll has that step (its memory is lost, Redis and the
        index keep what was done)."""
        previous, full = self.memory, False
        if previous is None:
            previous = None if self.hash is None else dict(self.hash)
            if previous is None or self.checkpoint is None:
                previous, full = {}, True
        self.clock += 1
        version = max(self.clock, self.checkpoint or 0)
        scan = scan_of(previous, version, [(key, (key, value)) for key, value in view.items()])
        plan = plan_poll(version, previous, scan.digests, scan.violations.keys())
        for step in poll_steps(full=full):
            items = self.items(step, plan, scan)
            if crash is not None and crash[0] == step:
                for item in items[: crash[1] % (len(items) + 1)]:
                    item()
                self.memory = None
                return
            for item in items:
                item()
        self.memory = scan.digests

    def subscribe(self, view: Mapping[str, int]) -> None:
        """A SUBSCRIBE-mode producer ran: the index got ``view``, the checkpoint moved,
        and (producer.service) the digest hash was dropped when it started."""
        self.hash, self.memory = None, None
        self.clock += 1
        for key, value in view.items():
            self.put(key, self.clock, [key, value])
        for key in self.documents().keys() - view.keys():
            self.put(key, self.clock, None)
        self.checkpoint = self.clock + 1


FEW_KEYS = KEYS[:3]  # few keys and values: histories that revisit a state are likely
small_views = st.dictionaries(st.sampled_from(FEW_KEYS), st.integers(0, 1))
STEPS = ["forget", "invalidate", "write", "reconcile", "remember", "remember_at_once", "commit"]
crash_points = st.none() | st.tuples(st.sampled_from(STEPS), st.integers(0, 3))
events = st.tuples(st.just("poll"), small_views, crash_points) | st.tuples(
    st.just("subscribe"), small_views, st.none()
)


A, B = FEW_KEYS[:2]


@settings(max_examples=300)
@given(st.lists(events, max_size=12), small_views)
# A full poll whose digests were half stored when it died: B, written at the
# marker's own version, must not be forgotten (hence MULTI/EXEC).
@example([("subscribe", {A: 0, B: 0}, None), ("poll", {A: 0, B: 0}, ("remember", 1))], {A: 0})
@example(
    [("subscribe", {A: 0, B: 0}, None), ("poll", {A: 0, B: 0}, ("remember_at_once", 1))], {A: 0}
)
# A full poll that died after storing its digests but before its marker: what
# SUBSCRIBE wrote and nothing polled (B) must still go (hence marker first).
@example([("subscribe", {A: 0, B: 0}, None), ("poll", {A: 0}, ("reconcile", 0))], {A: 0})
# A poll that died after writing A = 1 and before storing its digest: when A goes
# back to 0, the stored digest of 0 must not hide it (hence invalidate first).
@example([("poll", {A: 0}, None), ("poll", {A: 1}, ("remember", 0))], {A: 0})
# A poll that died before writing A = 1: its digest must not claim A = 1 is written.
@example([("poll", {A: 0}, None), ("poll", {A: 1}, ("write", 0))], {A: 1})
# The same for a delete: B deleted, died before its digest was dropped, B is back.
@example([("poll", {A: 0, B: 0}, None), ("poll", {A: 0}, ("remember", 0))], {A: 0, B: 0})
def test_a_crash_between_or_inside_any_steps_only_replays(
    history: list[tuple[str, dict[str, int], tuple[str, int] | None]], final: dict[str, int]
) -> None:
    """Polling producers killed at any write of any poll and restarted from Redis,
    SUBSCRIBE-mode runs in between: after every poll that completes, and after a
    last one, the index holds exactly the view."""
    model = Model()
    for mode, view, crash in history:
        if mode == "subscribe":
            model.subscribe(view)
            continue
        model.poll(view, crash)
        if model.memory is not None:  # it completed
            assert model.documents() == {key: [key, value] for key, value in view.items()}
    model.poll(final, None)
    assert model.documents() == {key: [key, value] for key, value in final.items()}
