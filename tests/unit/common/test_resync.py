"""common/resync.py: the resync's record, and what a run or an abort does from each phase.

Pure: records and layouts are built by hand the way cli.resync_run.gather reads
them (tests/e2e/test_resync.py runs the same plans against real services).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.index import Layout
from searchsync.common.resync import (
    DUAL_WRITE_PHASES,
    Facts,
    Phase,
    Record,
    Step,
    Verdict,
    advanced,
    describe,
    dual_write_target,
    parse_record,
    plan,
    plan_abort,
    unconfirmed,
)

ALIAS = "orders"
FULL = (
    Step.START,
    Step.CREATE_TARGET,
    Step.DUAL_WRITE,
    Step.WAIT_CONFIRMED,
    Step.LOAD,
    Step.FINISH_LOAD,
    Step.VERIFY,
    Step.SWAP,
    Step.FINISH,
)


def facts(members: dict[str, bool | None], *indexes: str) -> Facts:
    return Facts(Layout(ALIAS, members=members), tuple(sorted({*members, *indexes})))


def recorded(phase: Phase, **changes: int | None) -> Record:
    base = Record("r1", Phase.PREPARING, ALIAS, "orders_v2", "orders_v1", 1_000)
    return advanced(base, phase, **changes)


def run_plan(record: Record | None, state: Facts):  # type: ignore[no-untyped-def]
    return plan(record, state, alias=ALIAS, new_id="new", now_ms=5)


def test_a_new_resync_targets_the_next_generation_and_runs_every_step() -> None:
    the_plan = run_plan(None, facts({"orders_v1": True}, "orders_v4"))
    assert the_plan.verdict is Verdict.RUN and not the_plan.resumed
    assert the_plan.steps == FULL
    assert the_plan.record == Record("new", Phase.PREPARING, ALIAS, "orders_v5", "orders_v1", 5)
    assert the_plan.record.write_alias == "orders_resync"


def test_the_old_index_is_the_alias_write_index_even_among_several() -> None:
    the_plan = run_plan(None, facts({"orders_v1": False, "orders_v3": True}))
    assert the_plan.record is not None
    assert (the_plan.record.old, the_plan.record.target) == ("orders_v3", "orders_v4")


def test_no_alias_or_a_concrete_index_is_refused_with_the_fix() -> None:
    missing = run_plan(None, Facts(Layout(ALIAS)))
    assert missing.verdict is Verdict.REFUSED and "searchsync index create" in missing.message
    concrete = run_plan(None, Facts(Layout(ALIAS, concrete=True)))
    assert concrete.verdict is Verdict.REFUSED and "index adopt" in concrete.message


def test_each_recorded_phase_resumes_where_it_stopped() -> None:
    state = facts({"orders_v1": True}, "orders_v2")
    expected = {
        Phase.PREPARING: FULL[1:],
        Phase.DUAL_WRITE: FULL[3:],
        Phase.LOADING: FULL[3:],  # confirmations are checked again, the load starts over
        Phase.VERIFYING: FULL[5:],
        Phase.SWAPPING: FULL[7:],
    }
    for phase, steps in expected.items():
        the_plan = run_plan(recorded(phase), state)
        assert the_plan.verdict is Verdict.RUN and the_plan.resumed, phase
        assert the_plan.steps == steps, phase
        assert the_plan.record == recorded(phase)


def test_a_swap_that_happened_only_needs_finishing() -> None:
    swapped = facts({"orders_v2": True}, "orders_v1")
    the_plan = run_plan(recorded(Phase.SWAPPING), swapped)
    assert the_plan.steps == (Step.FINISH,)


def test_a_preparing_record_resumes_even_before_its_index_exists() -> None:
    the_plan = run_plan(recorded(Phase.PREPARING), facts({"orders_v1": True}))
    assert the_plan.steps[0] is Step.CREATE_TARGET


def test_a_target_deleted_by_hand_is_refused_with_abort_as_the_way_out() -> None:
    the_plan = run_plan(recorded(Phase.LOADING), facts({"orders_v1": True}))
    assert the_plan.verdict is Verdict.REFUSED
    assert "orders_v2" in the_plan.message and "--abort" in the_plan.message


def test_an_alias_moved_by_someone_else_is_refused() -> None:
    moved = facts({"orders_v9": True}, "orders_v1", "orders_v2")
    for phase in (Phase.DUAL_WRITE, Phase.VERIFYING, Phase.SWAPPING):
        the_plan = run_plan(recorded(phase), moved)
        assert the_plan.verdict is Verdict.REFUSED, phase
        assert "orders_v9" in the_plan.message and "--abort" in the_plan.message


def test_a_record_for_another_alias_is_refused() -> None:
    other = Record("r1", Phase.LOADING, "products", "products_v2", "products_v1", 1)
    the_plan = run_plan(other, facts({"orders_v1": True}))
    assert the_plan.verdict is Verdict.REFUSED and "OS_INDEX_NAME=products" in the_plan.message


def test_abort_deletes_the_target_and_the_record_but_never_an_index_behind_the_alias() -> None:
    live = facts({"orders_v1": True}, "orders_v2")
    the_plan = plan_abort(recorded(Phase.LOADING), live, alias=ALIAS)
    assert the_plan.steps == (Step.DELETE_TARGET, Step.CLEAR)
    # the target already gone: DELETE_TARGET still parks orders_resync on the live index
    gone = plan_abort(recorded(Phase.DUAL_WRITE), facts({"orders_v1": True}), alias=ALIAS)
    assert gone.steps == (Step.DELETE_TARGET, Step.CLEAR)
    broken = plan_abort(recorded(Phase.LOADING), Facts(Layout(ALIAS, concrete=True)), alias=ALIAS)
    assert broken.verdict is Verdict.REFUSED
    swapped = plan_abort(recorded(Phase.SWAPPING), facts({"orders_v2": True}), alias=ALIAS)
    assert swapped.verdict is Verdict.REFUSED and "finishes" in swapped.message
    nothing = plan_abort(None, live, alias=ALIAS)
    assert nothing.verdict is Verdict.NOTHING


def test_consumers_dual_write_only_in_the_dual_write_phases() -> None:
    for phase in Phase:
        target = dual_write_target(recorded(phase))
        if phase in DUAL_WRITE_PHASES:
            assert target == ("r1", "orders_resync"), phase
        else:
            assert target is None, phase
    assert dual_write_target(None) is None


def test_unconfirmed_lists_live_consumers_without_this_resyncs_id() -> None:
    confirmed = {"c1": "r1", "c2": "r0", "gone": "r1"}
    assert unconfirmed(["c3", "c1", "c2"], confirmed, "r1") == ["c2", "c3"]
    assert unconfirmed([], confirmed, "r1") == []


@given(
    phase=st.sampled_from(list(Phase)),
    high_water=st.none() | st.integers(0, 2**62),
    as_of=st.none() | st.integers(0, 2**62),
    loaded=st.none() | st.integers(0, 10**9),
)
def test_a_record_survives_the_round_trip_through_its_hash(
    phase: Phase, high_water: int | None, as_of: int | None, loaded: int | None
) -> None:
    record = recorded(phase, high_water=high_water, as_of=as_of, loaded=loaded)
    raw = {name.encode(): value.encode() for name, value in record.fields().items()}
    assert parse_record(raw) == record


def test_an_unreadable_record_means_no_resync() -> None:
    good = {k.encode(): v.encode() for k, v in recorded(Phase.LOADING).fields().items()}
    assert parse_record({}) is None
    assert parse_record({**good, b"phase": b"weird"}) is None
    assert parse_record({k: v for k, v in good.items() if k != b"target"}) is None
    assert parse_record({**good, b"started_ms": b"x"}) is None


def test_describe_names_every_step_and_what_happens_to_the_old_index() -> None:
    the_plan = run_plan(None, facts({"orders_v1": True}))
    lines = describe(the_plan, grace_seconds=3600, keep_old=False)
    assert len(lines) == len(FULL)
    assert any("orders_v1 for 3600 s" in line for line in lines)
    kept = describe(the_plan, grace_seconds=3600, keep_old=True)
    assert any("--keep-old" in line for line in kept)
