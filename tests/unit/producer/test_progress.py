"""producer/progress.py: progress entries at most once per interval, only on news."""

from __future__ import annotations

from searchsync.producer.progress import ProgressPacer


def test_first_progress_is_due_then_rate_limited() -> None:
    pacer = ProgressPacer(1000)
    assert pacer.due(0, 10)
    pacer.sent(0, 10)
    assert not pacer.due(999, 11)
    assert pacer.due(1000, 11)


def test_no_progress_without_a_new_frontier() -> None:
    pacer = ProgressPacer(1000)
    pacer.sent(0, 10)
    assert not pacer.due(5000, 10)
    assert pacer.due(5000, 12)


def test_not_sent_means_still_due() -> None:
    pacer = ProgressPacer(1000)
    assert pacer.due(0, 10)
    assert pacer.due(1, 10)  # the write failed, nothing was recorded
