"""producer/resume.py: exact resume from the checkpoint, snapshot when refused."""

from __future__ import annotations

from searchsync.producer.resume import StartPlan, as_of_refused, plan_start


def test_checkpoint_resumes_as_of_f_minus_one_reading_the_snapshot_for_state_only() -> None:
    plan = plan_start(1_700_000_000_000, discard_snapshot=False, refused=False)
    assert plan == StartPlan(1_699_999_999_999, True, False, plan.reason, write_snapshot=False)


def test_upsert_envelope_resumes_without_a_snapshot() -> None:
    plan = plan_start(1_700_000_000_000, discard_snapshot=False, refused=False, keeps_state=False)
    assert (plan.as_of, plan.snapshot, plan.write_snapshot) == (1_699_999_999_999, False, False)


def test_no_checkpoint_takes_a_snapshot_and_reconciles() -> None:
    plan = plan_start(None, discard_snapshot=False, refused=False)
    assert (plan.as_of, plan.snapshot, plan.reconcile) == (None, True, True)


def test_refused_as_of_takes_a_snapshot_and_reconciles() -> None:
    plan = plan_start(1_700_000_000_000, discard_snapshot=False, refused=True)
    assert (plan.as_of, plan.snapshot, plan.reconcile) == (None, True, True)


def test_a_written_snapshot_is_declared_at_least_at_the_high_water_mark() -> None:
    """A progress entry F may be in the streams above the checkpoint (its session was
    fenced or cut before the checkpoint moved): the snapshot is taken at or above it."""
    for checkpoint, refused in ((None, False), (1_700_000_000_000, True)):
        plan = plan_start(
            checkpoint, discard_snapshot=False, refused=refused, high_water=1_700_000_004_501
        )
        assert (plan.as_of, plan.at_least, plan.snapshot, plan.reconcile) == (
            1_700_000_004_501, True, True, True
        )  # fmt: skip
        assert plan.write_snapshot and "high-water mark 1700000004501" in plan.reason
    # an exact resume and DISCARD_SNAPSHOT ignore it
    plan = plan_start(1_700_000_000_000, discard_snapshot=False, refused=False, high_water=9)
    assert (plan.as_of, plan.at_least) == (1_699_999_999_999, False)
    plan = plan_start(None, discard_snapshot=True, refused=False, high_water=9)
    assert (plan.as_of, plan.at_least) == (None, False)


def test_discard_snapshot_streams_changes_only() -> None:
    for checkpoint in (None, 5):
        plan = plan_start(checkpoint, discard_snapshot=True, refused=False)
        assert (plan.as_of, plan.snapshot, plan.reconcile) == (None, True, False)
        assert not plan.write_snapshot  # read for the per-key state, never written


def test_both_wordings_of_a_refused_as_of() -> None:
    assert as_of_refused(
        "Timestamp (1651279773000) is not valid for all inputs: "
        "[Antichain { elements: [1651279800000] }]"
    )
    assert as_of_refused("could not find a valid timestamp for the query")
    assert not as_of_refused("SUBSCRIBE fell behind")
    assert not as_of_refused("unknown catalog item 'orders_search_source_mv'")
