"""producer/consolidate.py: per-timestamp consolidation equals applying diffs one by one."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchsync.producer.consolidate import Consolidated, Consolidator
from searchsync.producer.rows import Diff, Event, Layout, Progress, Rejected, Upsert, parse_rows

KEYS = ["k0", "k1", "k2", "k3", "k4"]
VERSIONS = ["a", "b", "c"]
Row = tuple[object, ...]


def row(key: str, version: str) -> Row:
    return (key, version)


def apply(store: dict[str, Row], changes: Sequence[tuple[int, str, Row | None]]) -> None:
    for _, key, values in changes:
        if values is None:
            store.pop(key, None)
        else:
            store[key] = values


def feed_in_chunks(
    consolidator: Consolidator, events: list[Event], cuts: list[int]
) -> list[Consolidated]:
    outs = []
    start = 0
    for cut in [*sorted({c % (len(events) + 1) for c in cuts}), len(events)]:
        outs.append(consolidator.feed(events[start:cut]))
        start = cut
    return outs


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Event], dict[str, Row], int]:
    """A diff stream that keeps at most one live row per key after every timestamp.

    Returns the events, the final state (key → row) and the final timestamp.
    Inside a timestamp the diffs are shuffled, and some are split into canceling
    pieces (+r, +r, -r instead of +r) so consolidation has real work to do.
    """
    rng = random.Random(draw(st.integers(0, 2**32)))
    state: dict[str, Row] = {}
    events: list[Event] = [Progress(100)]  # the AS OF
    ts = 100
    for _ in range(draw(st.integers(0, 8))):
        ts += draw(st.integers(1, 5))
        if draw(st.booleans()):
            events.append(Progress(draw(st.integers(events[-1][0], ts))))
        diffs: list[Diff] = []
        for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=5)):
            new = draw(st.one_of(st.none(), st.sampled_from(VERSIONS)))
            old = state.get(key)
            new_row = None if new is None else row(key, new)
            multiset: Counter[Row] = Counter()
            if old is not None:
                multiset[old] -= 1
            if new_row is not None:
                multiset[new_row] += 1
                state[key] = new_row
            else:
                state.pop(key, None)
            for values, diff in multiset.items():
                if diff == 0:
                    if draw(st.booleans()):  # an unchanged row retracted and inserted again
                        diffs += [Diff(ts, key, 1, values), Diff(ts, key, -1, values)]
                    continue
                if draw(st.booleans()):
                    diffs += [Diff(ts, key, diff * 2, values), Diff(ts, key, -diff, values)]
                else:
                    diffs.append(Diff(ts, key, diff, values))
        rng.shuffle(diffs)
        events.extend(diffs)
    events.append(Progress(ts + 1))
    return events, state, ts


@given(histories(), st.lists(st.integers(0, 200), max_size=6))
@settings(max_examples=300)
def test_consolidating_then_applying_equals_applying_diffs_one_by_one(
    history: tuple[list[Event], dict[str, Row], int], cuts: list[int]
) -> None:
    events, expected, last_ts = history
    # One by one: a multiset per key, the document is the key's single live row.
    multisets: dict[str, Counter[Row]] = {}
    for event in events:
        if isinstance(event, Diff):
            multisets.setdefault(event.key, Counter())[event.values] += event.diff
    one_by_one = {
        key: next(r for r, n in ms.items() if n > 0)
        for key, ms in multisets.items()
        if sum(n for n in ms.values() if n > 0) == 1
    }
    assert one_by_one == expected

    consolidator = Consolidator(snapshot=False)
    store: dict[str, Row] = {}
    for out in feed_in_chunks(consolidator, events, cuts):
        assert not out.violations
        apply(store, out.all_changes())
    assert store == expected
    assert consolidator.frontier == last_ts + 1


@given(histories())
def test_changes_come_once_per_key_and_timestamp_in_order(
    history: tuple[list[Event], dict[str, Row], int],
) -> None:
    events, _, _ = history
    out = Consolidator(snapshot=False).feed(events)
    pairs = [(ts, key) for ts, key, _ in out.changes]
    assert len(pairs) == len(set(pairs))
    assert [ts for ts, _ in pairs] == sorted(ts for ts, _ in pairs)


def test_update_is_one_upsert_whatever_the_order() -> None:
    for order in ([-1, 1], [1, -1]):
        events: list[Event] = [Progress(10)]
        for diff in order:
            events.append(Diff(11, "o1", diff, ("o1", "old" if diff < 0 else "new")))
        events.append(Progress(12))
        out = Consolidator(snapshot=False).feed(events)
        assert out.changes == [(11, "o1", ("o1", "new"))]


def test_identical_retraction_and_insertion_is_nothing() -> None:
    out = Consolidator(snapshot=False).feed(
        [Progress(1), Diff(2, "o1", 1, ("o1", "x")), Diff(2, "o1", -1, ("o1", "x")), Progress(3)]
    )
    assert out.changes == []
    assert out.frontier == 3


def test_retraction_alone_is_a_delete() -> None:
    out = Consolidator(snapshot=False).feed(
        [Progress(1), Diff(2, "o1", -1, ("o1", "x")), Progress(3)]
    )
    assert out.changes == [(2, "o1", None)]


def test_two_live_rows_is_a_violation_and_nothing_else_stops() -> None:
    out = Consolidator(snapshot=False).feed(
        [
            Progress(1),
            Diff(2, "o1", 1, ("o1", "task-a")),
            Diff(2, "o2", 1, ("o2", "x")),
            Diff(2, "o1", 1, ("o1", "task-b")),
            Diff(3, "o3", 1, ("o3", "y")),
            Progress(4),
        ]
    )
    assert out.changes == [(2, "o2", ("o2", "x")), (3, "o3", ("o3", "y"))]
    [violation] = out.violations
    assert violation.key == "o1"
    assert violation.ts == 2
    assert sorted(violation.rows) == [("o1", "task-a"), ("o1", "task-b")]
    assert "2 live rows" in violation.reason


def test_multiplicity_two_is_a_violation() -> None:
    out = Consolidator(snapshot=False).feed(
        [Progress(1), Diff(2, "o1", 2, ("o1", "x")), Progress(3)]
    )
    assert out.violations[0].rows == (("o1", "x"), ("o1", "x"))


def test_timestamp_completes_only_on_later_row_or_progress_above_it() -> None:
    consolidator = Consolidator(snapshot=False)
    out = consolidator.feed([Progress(5), Diff(5, "o1", 1, ("o1", "x")), Progress(5)])
    assert out.changes == []
    assert out.frontier == 5  # everything below 5 is out, 5 itself is not complete
    out = consolidator.feed([Diff(7, "o2", 1, ("o2", "y"))])
    assert out.changes == [(5, "o1", ("o1", "x"))]
    assert out.frontier == 7
    out = consolidator.feed([Progress(9)])
    assert out.changes == [(7, "o2", ("o2", "y"))]
    assert out.frontier == 9


def test_timestamps_going_back_is_an_error() -> None:
    consolidator = Consolidator(snapshot=False)
    consolidator.feed([Progress(1), Diff(5, "o1", 1, ("o1", "x"))])
    with pytest.raises(ValueError, match="went back"):
        consolidator.feed([Diff(4, "o1", 1, ("o1", "x"))])


@pytest.mark.parametrize("hold_limit", [1, 3, 1000])
def test_snapshot_completes_once_and_frontier_waits_for_it(hold_limit: int) -> None:
    consolidator = Consolidator(snapshot=True, hold_limit=hold_limit)
    rows = [Diff(50, f"o{i}", 1, (f"o{i}", "v")) for i in range(10)]
    out = consolidator.feed([Progress(50), *rows[:6]])
    assert out.as_of == 50
    assert out.frontier is None  # the snapshot is not all out yet
    assert not out.snapshot_complete
    early = out.all_changes()
    out2 = consolidator.feed([*rows[6:], Diff(51, "o1", -1, ("o1", "v")), Progress(52)])
    assert out2.snapshot_complete
    assert out.snapshot_rows + out2.snapshot_rows == 10
    assert out2.frontier == 52
    snapshot = [c for c in early + out2.all_changes() if c[0] == 50]
    assert sorted(key for _, key, _ in snapshot) == sorted(f"o{i}" for i in range(10))
    assert (51, "o1", None) in out2.changes
    if hold_limit < 6:
        assert early  # handed out before the snapshot was complete


def test_snapshot_duplicate_after_early_hand_out_is_still_a_violation() -> None:
    consolidator = Consolidator(snapshot=True, hold_limit=1)
    out = consolidator.feed(
        [Progress(50), Diff(50, "o1", 1, ("o1", "a")), Diff(50, "o1", 1, ("o1", "b")), Progress(51)]
    )
    assert out.all_changes() == [(50, "o1", ("o1", "a"))]
    assert [v.key for v in out.violations] == ["o1"]
    assert out.violations[0].rows == (("o1", "b"),)


def test_empty_snapshot_completes_on_progress() -> None:
    consolidator = Consolidator(snapshot=True)
    out = consolidator.feed([Progress(50), Progress(51)])
    assert out.snapshot_complete
    assert out.snapshot_rows == 0
    assert out.frontier == 51


def test_without_snapshot_rows_at_as_of_plus_one_are_ordinary() -> None:
    consolidator = Consolidator(snapshot=False)
    out = consolidator.feed([Progress(50), Diff(51, "o1", 1, ("o1", "a")), Progress(52)])
    assert out.snapshot_rows == 0
    assert not out.snapshot_complete
    assert out.changes == [(51, "o1", ("o1", "a"))]


upsert_states = st.sampled_from(["upsert", "delete"])


@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(KEYS), upsert_states, st.sampled_from(VERSIONS)), max_size=6
        ),
        max_size=6,
    )
)
def test_upsert_envelope_last_state_per_timestamp_wins(
    batches: list[list[tuple[str, str, str]]],
) -> None:
    events: list[Event] = [Progress(1)]
    expected: dict[str, Row] = {}
    for offset, batch in enumerate(batches):
        ts = 2 + offset
        seen: set[str] = set()
        for key, state, version in batch:
            if key in seen:
                continue  # Materialize gives one state per key and timestamp
            seen.add(key)
            values = row(key, version) if state == "upsert" else None
            events.append(Upsert(ts, key, state, values))
            if values is None:
                expected.pop(key, None)
            else:
                expected[key] = values
    events.append(Progress(100))
    store: dict[str, Row] = {}
    apply(store, Consolidator(snapshot=False, envelope="upsert").feed(events).changes)
    assert store == expected


def test_upsert_envelope_key_violation_is_reported() -> None:
    out = Consolidator(snapshot=False, envelope="upsert").feed(
        [
            Progress(1),
            Upsert(2, "o1", "key_violation", None),
            Upsert(2, "o2", "upsert", ("o2", "a")),
            Progress(3),
        ]
    )
    assert out.changes == [(2, "o2", ("o2", "a"))]
    assert [(v.key, v.rows) for v in out.violations] == [("o1", ())]


SUBSCRIBE_LAYOUT = Layout.from_columns(
    ["mz_timestamp", "mz_progressed", "mz_diff", "id", "v"], "diffs", "id"
)


@st.composite
def subscribe_rows(draw: st.DrawFn) -> list[tuple[object, ...]]:
    """Raw SUBSCRIBE rows (diffs envelope, WITH PROGRESS) as psycopg gives them.

    Mostly what a snapshot looks like (+1 rows of new keys at the AS OF), with
    what breaks the fast path mixed in: repeated keys, multiplicities, progress
    rows, later timestamps, timestamps as int/Decimal/odd text, malformed rows.
    """
    ts = draw(st.integers(10, 20))
    rows: list[tuple[object, ...]] = []
    if draw(st.booleans()):
        rows.append((str(ts), True, None, None, None))
    keys = [f"k{i}" for i in range(draw(st.integers(1, 30)))]
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(["new"] * 6 + ["any", "progress", "later", "bad", "form"]))
        if kind == "later":
            ts += draw(st.integers(1, 3))
        if kind == "progress":  # nothing below it will come: later rows are not below it
            ts = draw(st.integers(ts, ts + 2))
            rows.append((str(ts), True, None, None, None))
            continue
        raw: object = str(ts)
        if kind == "form":
            raw = draw(st.sampled_from([ts, float(ts), Decimal(ts), Decimal(f"{ts}.0"), f"0{ts}"]))
        key: object = keys.pop() if kind == "new" and keys else f"k{draw(st.integers(0, 30))}"
        diff: object = 1 if kind == "new" else draw(st.sampled_from([1, 1, -1, 2, -2]))
        if kind == "bad":
            key, diff, raw = draw(
                st.sampled_from([(None, 1, raw), (key, 0, raw), (key, 1, "x"), (key, True, raw)])
            )
        rows.append((raw, False, diff, key, draw(st.sampled_from(VERSIONS))))
    rows.append((str(ts + 1), True, None, None, None))
    return rows


@given(
    subscribe_rows(),
    st.lists(st.integers(0, 200), max_size=6),
    st.sampled_from([1, 2, 3, 1000]),
    st.booleans(),
)
@settings(max_examples=400)
def test_feed_rows_equals_feed_of_parsed_rows(
    rows: list[tuple[object, ...]], cuts: list[int], hold_limit: int, snapshot: bool
) -> None:
    fast = Consolidator(snapshot=snapshot, hold_limit=hold_limit)
    general = Consolidator(snapshot=snapshot, hold_limit=hold_limit)
    start = 0
    for cut in [*sorted({c % (len(rows) + 1) for c in cuts}), len(rows)]:
        chunk = rows[start:cut]
        start = cut
        fast_rejected: list[Rejected] = []
        general_rejected: list[Rejected] = []
        got = fast.feed_rows(SUBSCRIBE_LAYOUT, chunk, fast_rejected)
        want = general.feed(parse_rows(SUBSCRIBE_LAYOUT, chunk, general_rejected))
        assert got == want
        assert list(got.snapshot.items()) == list(want.snapshot.items())  # same order too
        assert fast_rejected == general_rejected
    assert fast.frontier == general.frontier


def test_feed_rows_takes_snapshot_rows_without_parsing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from searchsync.producer import consolidate

    parsed: list[int] = []

    def counting_parse_rows(
        layout: Layout, rows: Sequence[tuple[object, ...]], rejected: list[Rejected]
    ) -> list[Event]:
        parsed.append(len(rows))
        return parse_rows(layout, rows, rejected)

    monkeypatch.setattr(consolidate, "parse_rows", counting_parse_rows)
    rows: list[tuple[object, ...]] = [("50", True, None, None, None)]
    rows += [("50", False, 1, f"k{i}", "v") for i in range(100)]
    out = Consolidator(snapshot=True).feed_rows(SUBSCRIBE_LAYOUT, rows, [])
    assert out.snapshot_rows == 100
    assert sum(parsed) == 2  # the progress row and the first row at the AS OF


# --- several live rows per key, across timestamps -------------------------------------

ViewHistory = tuple[list[Event], dict[str, Row], set[str], list[tuple[int, str]]]


@st.composite
def view_histories(draw: st.DrawFn, *, start: int = 100) -> ViewHistory:
    """A diff stream of a view that breaks its key: a key may hold 0, 1, 2 or 3 live
    rows (a second row while the first lives, a duplicate row, one of two retracted,
    both retracted, an update of one of two), at any timestamp.

    Returns the events, the index the policy of producer/consolidate.py leads to (a
    key's document changes only when it has exactly one live row — to that row — or
    none — deleted; while it has more it keeps what it had), the keys in violation
    at the end, and (ts, key) of every timestamp that left a key with several rows
    after changing it.
    """
    rng = random.Random(draw(st.integers(0, 2**32)))
    live: dict[str, Counter[Row]] = {}
    index: dict[str, Row] = {}
    events: list[Event] = [Progress(start)]
    violations: list[tuple[int, str]] = []
    ts = start
    for _ in range(draw(st.integers(1, 10))):
        ts += draw(st.integers(1, 5))
        diffs: list[Diff] = []
        for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=4)):
            rows = live.setdefault(key, Counter())
            delta: Counter[Row] = Counter()
            for _ in range(draw(st.integers(1, 2))):
                current = [r for r, n in (rows + delta).items() for _ in range(n)]
                op = draw(st.sampled_from(["add", "add", "retract", "update", "duplicate"]))
                if op == "add" or not current:
                    delta[row(key, draw(st.sampled_from(VERSIONS)))] += 1
                elif op == "retract":
                    delta[draw(st.sampled_from(current))] -= 1
                elif op == "update":
                    delta[draw(st.sampled_from(current))] -= 1
                    delta[row(key, draw(st.sampled_from(VERSIONS)))] += 1
                else:  # the same row twice: multiplicity 2
                    delta[draw(st.sampled_from(current))] += 1
            for values, diff in delta.items():
                if diff == 0:
                    continue
                if draw(st.booleans()):  # split into canceling pieces
                    diffs += [Diff(ts, key, diff * 2, values), Diff(ts, key, -diff, values)]
                else:
                    diffs.append(Diff(ts, key, diff, values))
            rows.update(delta)
            rows += Counter()  # drop zero and negative counts
            total = sum(rows.values())
            if total == 1:
                index[key] = next(iter(rows))
            elif total == 0:
                index.pop(key, None)
            elif any(delta.values()):
                violations.append((ts, key))
        rng.shuffle(diffs)
        events.extend(diffs)
        if draw(st.booleans()):
            events.append(Progress(ts + 1))
    events.append(Progress(ts + 1))
    in_violation = {key for key, rows in live.items() if sum(rows.values()) > 1}
    return events, index, in_violation, violations


@given(view_histories(), st.lists(st.integers(0, 200), max_size=6))
@settings(max_examples=500)
def test_the_index_follows_the_view_when_a_key_has_several_live_rows(
    history: ViewHistory, cuts: list[int]
) -> None:
    events, expected, in_violation, violations = history
    consolidator = Consolidator(snapshot=False)
    store: dict[str, Row] = {}
    reported: list[tuple[int, str]] = []
    for out in feed_in_chunks(consolidator, events, cuts):
        apply(store, out.all_changes())
        reported += [(v.ts, v.key) for v in out.violations]
    assert store == expected
    assert sorted(reported) == sorted(violations)
    assert consolidator.violated_keys == len(in_violation)


@given(view_histories(), view_histories(start=1000), st.integers(1, 6))
@settings(max_examples=300)
def test_a_resumed_subscription_rebuilds_the_state_from_its_snapshot(
    first: ViewHistory, second: ViewHistory, hold_limit: int
) -> None:
    """Run one, stop, resume AS OF its frontier - 1 with a snapshot that only fills the
    state (write_snapshot=False), run on: the index ends where one long run would."""
    events, _, _, _ = first
    store: dict[str, Row] = {}
    running = Consolidator(snapshot=False)
    apply(store, running.feed(events).all_changes())
    # the view as it stands at the resume point, as Materialize's snapshot gives it
    view: Counter[tuple[str, Row]] = Counter()
    for event in events:
        if isinstance(event, Diff):
            view[(event.key, event.values)] += event.diff
    as_of = events[-1][0] - 1
    snapshot: list[Event] = [Progress(as_of)]
    snapshot += [Diff(as_of, key, n, values) for (key, values), n in view.items() if n > 0]
    resumed = Consolidator(snapshot=True, write_snapshot=False, hold_limit=hold_limit)
    out = resumed.feed(snapshot)
    assert out.snapshot == {} and out.changes == [] and out.violations == []
    later = [e for e in second[0] if not (isinstance(e, Progress) and e[0] == 1000)]
    apply(store, resumed.feed(later).all_changes())
    # one long run over both histories, as the oracle
    whole = Consolidator(snapshot=False)
    expected: dict[str, Row] = {}
    apply(expected, whole.feed(events[:-1] + later).all_changes())
    assert store == expected
