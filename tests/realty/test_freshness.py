"""The cron arithmetic of the landing check: the latest ticks at or before a moment."""

from datetime import UTC, datetime

from realty.freshness import recent_cron_ticks


def test_a_tick_at_now_counts_and_ticks_come_newest_first() -> None:
    at_tick = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)
    assert recent_cron_ticks("*/5 * * * *", at_tick, 3) == [
        datetime(2026, 1, 1, 10, 5, tzinfo=UTC),
        datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 9, 55, tzinfo=UTC),
    ]
    just_before = datetime(2026, 1, 1, 10, 4, 59, 999_999, tzinfo=UTC)
    assert recent_cron_ticks("*/5 * * * *", just_before, 1) == [at_tick.replace(minute=0)]


def test_an_irregular_cron_is_judged_by_its_own_ticks() -> None:
    monday_morning = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # weekdays at 09:00
    assert recent_cron_ticks("0 9 * * 1-5", monday_morning, 2) == [
        datetime(2026, 1, 2, 9, 0, tzinfo=UTC),  # Friday
        datetime(2026, 1, 1, 9, 0, tzinfo=UTC),
    ]
