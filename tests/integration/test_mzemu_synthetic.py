"""The emulator's made-up changes (``mzemu_synthetic_rate``), the benches' source that
is faster than any writer. Real PostgreSQL (a private FreshMart schema of 3 orders)
and a private emulator with 25 ms ticks."""

from __future__ import annotations

import time
from typing import Any

from tests.support.mzemu import Emulator, freshmart_schema, mzemu

__all__ = ["freshmart_schema", "mzemu"]

VIEW = "orders_search_source_mv"
RATE = 100  # changes/s: 2.5 a tick, within the 3 orders the view holds


def admin(emu: Emulator, call: str) -> int:
    with emu.connect(autocommit=True) as conn:
        row = conn.execute(f"SELECT {call}").fetchone()
        assert row is not None
        return int(str(row[0]))


def fetch_for(cur: Any, seconds: float) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        cur.execute("FETCH ALL c WITH (timeout = '50ms')")
        rows.extend(cur.fetchall())
    return rows


def test_the_rate_set_is_the_rate_of_changes_until_it_is_set_to_zero(mzemu: Emulator) -> None:
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS, SNAPSHOT false)")
        fetch_for(cur, 0.3)
        assert admin(mzemu, f"mzemu_synthetic_rate({RATE})") == RATE
        started = admin(mzemu, "mzemu_frontier()")
        rows = fetch_for(cur, 2.0)
        assert admin(mzemu, "mzemu_synthetic_rate(0)") == 0
        stopped = admin(mzemu, "mzemu_frontier()")
        rows += fetch_for(cur, 0.5)
        conn.rollback()
    changes = [r for r in rows if r[1] in (False, "f")]
    inserts = [r for r in changes if int(r[2]) == 1]
    # each made-up change retracts the old row and inserts the new one, status rewritten
    assert len(changes) == 2 * len(inserts)
    assert all(str(r[5]).startswith("synthetic ") for r in inserts)
    during = [r for r in inserts if started <= int(r[0]) < stopped]
    expected = RATE * (stopped - started) / 1000
    assert 0.8 * expected <= len(during) <= expected + 3, (len(during), expected)
    assert not [r for r in inserts if int(r[0]) > stopped + 100]  # none after rate 0


def test_a_rate_set_again_starts_afresh_without_a_burst(mzemu: Emulator) -> None:
    rate = 20  # half a change a tick: a burst of what would be owed shows as 3 a tick
    with mzemu.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {VIEW} WITH (PROGRESS, SNAPSHOT false)")
        admin(mzemu, f"mzemu_synthetic_rate({rate})")
        fetch_for(cur, 0.5)
        admin(mzemu, "mzemu_synthetic_rate(0)")
        fetch_for(cur, 1.5)  # time at rate 0: nothing owed afterwards
        admin(mzemu, f"mzemu_synthetic_rate({rate})")
        started = admin(mzemu, "mzemu_frontier()")
        rows = fetch_for(cur, 0.3)
        conn.rollback()
    inserts = [r for r in rows if r[1] in (False, "f") and int(r[2]) == 1]
    first_ticks = [r for r in inserts if int(r[0]) <= started + 100]
    assert len(first_ticks) <= rate * 0.1 + 3, len(first_ticks)  # 100 ms worth, not 2 s
