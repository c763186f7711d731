"""devstack.dashboard: the demo's live view, from a status report to what is drawn."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from devstack.dashboard import SyncedOrder, frame, rates, render
from searchsync.common.keys import Keys
from searchsync.common.status import PartitionStatus, Status


def _status(buffers: list[int], blocked: int | None = None) -> Status:
    partitions = [
        PartitionStatus(
            partition=n,
            length=10,
            lag=n,
            pending=0,
            owner=f"consumer-{n % 2}",
            applied_ts=1_000,
            freshness_seconds=1.5 * n,
            buffer=b,
            blocked="auth: 401" if n == blocked else None,
        )
        for n, b in enumerate(buffers)
    ]
    return Status(
        view="orders_search_source_mv",
        group="searchsync",
        checkpoint=1_000,
        checkpoint_age_seconds=0.4,
        members=["consumer-0", "consumer-1"],
        dlq_length=3,
        buffer=sum(buffers),
        partitions=partitions,
    )


def test_rates_are_acknowledged_changes_per_second_per_partition() -> None:
    before = {Keys.acked_field(0).encode(): b"100", Keys.acked_field(1).encode(): b"50"}
    after = {Keys.acked_field(0).encode(): b"300", Keys.acked_field(1).encode(): b"50"}
    assert rates(before, after, 3, 2.0) == [100.0, 0.0, 0.0]


@given(
    st.lists(st.integers(0, 10**9), min_size=2, max_size=2),
    st.floats(0.0, 10.0, allow_nan=False),
)
def test_rates_are_never_negative_even_when_a_counter_was_reset(
    counts: list[int], seconds: float
) -> None:
    field = Keys.acked_field(0).encode()
    (rate,) = rates({field: str(counts[0]).encode()}, {field: str(counts[1]).encode()}, 1, seconds)
    assert rate >= 0.0
    if seconds > 0 and counts[1] >= counts[0]:
        assert rate == (counts[1] - counts[0]) / seconds


def test_the_frame_sums_partitions_and_keeps_their_state() -> None:
    f = frame(_status([5, 0, 7], blocked=2), [10.0, 20.5, 0.0], [], now_ms=2_000)
    assert f.events_per_s == 30.5
    assert f.buffer == 12
    assert f.consumers == 2
    assert f.dlq == 3
    assert [r.blocked for r in f.rows] == [False, False, True]
    assert [r.freshness_seconds for r in f.rows] == [0.0, 1.5, 3.0]


def test_the_drawing_names_each_partition_the_latest_orders_and_their_age() -> None:
    latest = [SyncedOrder("FM-1042", "DELIVERED", "Ada Lovelace", sync_version=1_000)]
    f = frame(_status([5, 0], blocked=1), [12.0, 0.0], latest, now_ms=3_500)
    console = Console(width=140, record=True, color_system=None)
    console.print(render("orders_search_source_mv", f))
    text = console.export_text()
    assert "12 events/s" in text
    assert "buffer 5 changes" in text
    assert "p0" in text and "p1" in text
    assert "consumer-1 BLOCKED" in text
    assert "FM-1042" in text and "DELIVERED" in text
    assert "2.5s ago" in text


def test_the_search_command_queries_the_order_number() -> None:
    order = SyncedOrder("FM-7", "PLACED", "x", 1)
    assert order.search_command("http://127.0.0.1:9200", "orders") == (
        "curl -s 'http://127.0.0.1:9200/orders/_search?q=order_number:FM-7&pretty'"
    )
