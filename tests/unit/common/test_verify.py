"""common/verify.py compare(): drift by meaning, not by bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.verify import compare, normalize

ROW = {
    "order_id": "order:FM-1",
    "order_total_amount": Decimal("12.50"),
    "delivery_eta": datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
    "customer_name": "Ada",
    "assigned_courier_id": None,
}
DOC = {
    "order_id": "order:FM-1",
    "order_total_amount": 12.5,
    "delivery_eta": "2026-11-28T11:00:00+01:00",
    "customer_name": "Ada",
    "assigned_courier_id": None,
    "sync_version": 1764324000000,
}


def test_same_meaning_is_no_drift() -> None:
    drift = compare({"order:FM-1": ROW}, {"order:FM-1": DOC})
    assert drift.ok
    assert (drift.view_count, drift.index_count) == (1, 1)


def test_missing_extra_and_different() -> None:
    changed = {**DOC, "customer_name": "Bob"}
    drift = compare(
        {"order:FM-1": ROW, "order:FM-2": {**ROW, "order_id": "order:FM-2"}},
        {"order:FM-1": changed, "order:FM-9": DOC},
    )
    assert not drift.ok
    assert drift.missing == ["order:FM-2"]
    assert drift.extra == ["order:FM-9"]
    assert drift.different == {"order:FM-1": {"customer_name": ("Ada", "Bob")}}
    assert drift.keys == {"order:FM-1", "order:FM-2", "order:FM-9"}


def test_a_field_absent_on_one_side_is_drift() -> None:
    doc = {k: v for k, v in DOC.items() if k != "customer_name"}
    assert compare({"k": ROW}, {"k": doc}).different == {"k": {"customer_name": ("Ada", None)}}


def test_other_instant_is_drift() -> None:
    doc = {**DOC, "delivery_eta": "2026-11-28T10:00:01+00:00"}
    assert set(compare({"k": ROW}, {"k": doc}).different["k"]) == {"delivery_eta"}


@given(st.datetimes(timezones=st.just(UTC)), st.integers(-12, 12))
def test_instants_equal_across_offsets(instant: datetime, hours: int) -> None:
    shifted = instant.astimezone(timezone(timedelta(hours=hours)))
    assert normalize(shifted.isoformat()) == normalize(instant)


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, max_value=10**8, min_value=-(10**8)
    )
)
def test_numeric_equals_its_json_number(value: Decimal) -> None:
    assert normalize(value) == normalize(float(str(value)))
