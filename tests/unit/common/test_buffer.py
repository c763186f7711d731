"""common/buffer.py: buffer in changes; XINFO says whether anything is outstanding; the
producer's backpressure and `searchsync status` compute the same figure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import ResponseError

from searchsync.common.buffer import group_info, outstanding_changes, partition_buffer
from searchsync.common.keys import Keys
from searchsync.common.status import Raw, build
from searchsync.producer.backpressure import buffer_reading


def test_counts_changes_not_entries() -> None:
    assert partition_buffer(written=1000, acked=200, pending=4, lag=0) == 800
    assert partition_buffer(written=1000, acked=200, pending=0, lag=3) == 800


def test_nothing_outstanding_is_empty_even_if_counters_drifted() -> None:
    assert partition_buffer(written=50, acked=10, pending=0, lag=0) == 0


def test_counter_lag_never_hides_pending_entries() -> None:
    assert partition_buffer(written=5, acked=5, pending=3, lag=0) == 3


def test_a_phantom_lag_after_a_redis_restart_adds_nothing() -> None:
    # Redis 7.0 after an AOF rewrite and a restart: lag 700, all of it delivered and acked
    assert partition_buffer(written=1000, acked=1000, pending=0, lag=700) == 0


def test_an_unknown_lag_leaves_it_to_the_counters() -> None:
    assert partition_buffer(written=10, acked=4, pending=0, lag=None) == 6


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**6),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_never_negative_and_never_below_pending(
    written: int, acked: int, pending: int, lag: int | None
) -> None:
    result = partition_buffer(written, acked, pending, lag)
    assert result >= pending >= 0


# The producer's backpressure and `searchsync status` read the same Redis answers:
# they must show the same buffer, whatever XINFO says (lag nil, no group, no stream).
group_states = st.one_of(
    st.just("no stream"),
    st.just("no group"),
    st.fixed_dictionaries(
        {"lag": st.one_of(st.none(), st.integers(0, 50)), "pending": st.integers(0, 50)}
    ),
)


def _agree(partitions: list[tuple[object, int, int, int]]) -> None:
    counts: dict[bytes, bytes] = {}
    groups: list[list[dict[str, object]] | None] = []
    lengths: list[int] = []
    replies: list[object] = [counts, 0]
    for n, (state, written, acked, length) in enumerate(partitions):
        counts[f"written:p{n}".encode()] = str(written).encode()
        counts[f"acked:p{n}".encode()] = str(acked).encode()
        if state == "no stream":
            groups.append(None)
            replies += [ResponseError("no such key"), 0]
            lengths.append(0)
            continue
        infos = [{"name": b"other", "lag": 9, "pending": 9}]
        if isinstance(state, dict):
            infos.append({"name": b"g", **state})
        groups.append(infos)
        replies += [infos, length]
        lengths.append(length)
    raw = Raw(
        checkpoint=None,
        members=[],
        dlq_length=0,
        counts=counts,
        applied={},
        lengths=lengths,
        groups=groups,
        owners=[None] * len(partitions),
    )
    keys = Keys("v", len(partitions))
    status = build(raw, keys, view="v", group="g", now_ms=0, member_ttl_ms=1)
    reading, _ = buffer_reading(replies, len(partitions), "g")
    assert [p.buffer for p in status.partitions] == list(reading.partitions)
    assert status.buffer == reading.total


def test_status_and_backpressure_agree_when_redis_reports_no_lag() -> None:
    # lag nil (entries trimmed past the group): the counters decide, for both
    _agree([({"lag": None, "pending": 0}, 120, 20, 30), ({"lag": None, "pending": 3}, 5, 5, 3)])
    # and the figure itself: 100 changes, and at least the 3 pending entries
    assert (
        outstanding_changes({b"written:p0": b"120", b"acked:p0": b"20"}, 0, {"lag": None}, 30)
        == 100
    )


@given(
    st.lists(
        st.tuples(group_states, st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 100)),
        min_size=1,
        max_size=4,
    )
)
def test_status_and_backpressure_agree_on_any_answers(
    partitions: list[tuple[object, int, int, int]],
) -> None:
    _agree(partitions)


def test_no_group_yet_counts_every_entry_at_least_once() -> None:
    counts = {b"written:p0": b"4", b"acked:p0": b"0"}
    assert outstanding_changes(counts, 0, None, 10) == 10  # counters behind the stream
    assert outstanding_changes(counts, 0, None, 2) == 4
    assert group_info([{"name": "g", "pending": 1}], "g") == {"name": "g", "pending": 1}
    assert group_info(None, "g") is None
