"""The poller's retry schedule of a version whose load failed: soon, then less and less often."""

from __future__ import annotations

from serving.model_holder import RETRY_FIRST_DELAY_S, RETRY_MAX_DELAY_S, RetrySchedule


def test_a_failed_version_is_retried_after_a_delay_that_doubles_up_to_a_ceiling() -> None:
    schedule = RetrySchedule()
    now = 1000.0
    schedule.failed(now)
    assert not schedule.due(now + RETRY_FIRST_DELAY_S - 0.1)
    assert schedule.due(now + RETRY_FIRST_DELAY_S)
    waits = []
    for _ in range(10):
        now = schedule.next_at
        schedule.failed(now)
        waits.append(schedule.next_at - now)
    assert waits[:3] == [2 * RETRY_FIRST_DELAY_S, 4 * RETRY_FIRST_DELAY_S, 8 * RETRY_FIRST_DELAY_S]
    assert max(waits) == waits[-1] == RETRY_MAX_DELAY_S
