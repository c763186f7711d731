"""common/health.py: the /healthz rules, pure, on a clock the test moves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from searchsync.common.config import load_settings
from searchsync.common.health import HealthFacts, Limits, Snapshot, assess, limits_for

LIMITS = Limits(unreachable_after=5.0, stalled_after=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def facts() -> tuple[HealthFacts, Clock]:
    clock = Clock()
    return HealthFacts(clock), clock


def test_a_fresh_process_is_healthy() -> None:
    health, _ = facts()
    verdict = health.verdict(LIMITS)
    assert (verdict.ok, verdict.status, verdict.reason) == (True, 200, "ok")


def test_a_dependency_failing_longer_than_the_limit_is_named_with_its_error() -> None:
    health, clock = facts()
    health.failed("Redis", "Error 111 connecting to 127.0.0.1:6379. Connection refused.\nmore")
    clock.now += 4
    health.tick()
    health.failed("Redis", "Error 111 again")  # still failing since the first failure
    assert health.verdict(LIMITS).ok
    clock.now += 2
    health.tick()
    verdict = health.verdict(LIMITS)
    assert (verdict.ok, verdict.status) == (False, 503)
    assert verdict.reason == "Redis failing for 6s: Error 111 again"
    assert "\n" not in verdict.reason


def test_an_answer_clears_the_failure_and_the_next_failure_starts_a_new_count() -> None:
    health, clock = facts()
    health.failed("OpenSearch", "ConnectionError refused")
    clock.now += 10
    health.tick()
    assert not health.verdict(LIMITS).ok
    health.answered("OpenSearch")
    assert health.verdict(LIMITS).ok
    health.failed("OpenSearch", "refused again")
    clock.now += 3
    health.tick()
    assert health.verdict(LIMITS).ok, "3 s of failure is within the limit"


def test_the_longest_failing_dependency_is_reported_first() -> None:
    health, clock = facts()
    health.failed("OpenSearch", "refuses writes (auth): 401")
    clock.now += 2
    health.failed("Redis", "refused")
    clock.now += 10
    health.tick()
    assert health.verdict(LIMITS).reason.startswith("OpenSearch failing for 12s: refuses writes")


def test_a_stalled_loop_is_unhealthy_even_without_failures() -> None:
    health, clock = facts()
    clock.now += 5.5
    assert health.verdict(LIMITS).reason == "event loop stalled: no tick for 6s"


def test_no_progress_while_work_waits_counts_from_when_the_work_appeared() -> None:
    health, clock = facts()
    clock.now += 500  # idle for long: no work, so no stall
    health.tick()
    assert health.verdict(LIMITS).ok
    health.waiting("1200 changes in hand")
    clock.now += 59
    health.tick()
    assert health.verdict(LIMITS).ok
    clock.now += 2
    health.tick()
    verdict = health.verdict(LIMITS)
    assert verdict.reason == "no progress for 61s while 1200 changes in hand"
    health.progressed()
    assert health.verdict(LIMITS).ok
    clock.now += 61
    health.tick()
    health.waiting("")  # drained: nothing waits, nothing is expected
    assert health.verdict(LIMITS).ok


def test_limits_follow_the_settings() -> None:
    defaults = load_settings({})
    assert limits_for(defaults, role="producer") == Limits(5.0, 60.0)
    # two OpenSearch timeouts (30 s) plus the longest backoff (30 s)
    assert limits_for(defaults, role="consumer") == Limits(5.0, 90.0)
    polling = load_settings({"USE_SUBSCRIBE": "false", "POLL_INTERVAL": "40"})
    assert limits_for(polling, role="producer").stalled_after == 120.0
    assert (
        limits_for(load_settings({"LEASE_TTL_SECONDS": "2"}), role="consumer").unreachable_after
        == 2
    )


snapshots = st.builds(
    Snapshot,
    ticked_at=st.floats(0, 1000),
    progress_at=st.floats(0, 1000),
    work=st.sampled_from(["", "5 changes in hand"]),
    work_since=st.one_of(st.none(), st.floats(0, 1000)),
    failing=st.lists(
        st.tuples(st.sampled_from(["Redis", "OpenSearch"]), st.floats(0, 1000), st.just("e")),
        max_size=2,
    ).map(tuple),
)


@given(snapshots, st.floats(1000, 2000), st.floats(0, 500))
def test_time_alone_never_heals(snapshot: Snapshot, now: float, later: float) -> None:
    """Without a new fact, a 503 stays a 503 as time passes."""
    if not assess(snapshot, now, LIMITS).ok:
        assert not assess(snapshot, now + later, LIMITS).ok


@given(snapshots, st.floats(1000, 2000))
def test_every_verdict_is_one_line_and_503_names_its_cause(snapshot: Snapshot, now: float) -> None:
    verdict = assess(snapshot, now, LIMITS)
    assert "\n" not in verdict.reason
    assert verdict.ok == (verdict.reason == "ok")
    if not verdict.ok:
        assert verdict.reason.startswith(("event loop stalled", "no progress for")) or any(
            verdict.reason.startswith(f"{name} failing for") for name, _, _ in snapshot.failing
        )
