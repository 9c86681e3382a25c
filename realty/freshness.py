"""What the learning-loop sensors and the freshness checks read: new drift verdicts, how stale
production is (batches landed and hours passed since the data it was trained on), whether
batches still land on schedule, and how many retrain verdicts production has ignored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from croniter import croniter

from realty.model_error import evidence
from realty.settings import Settings
from realty.store.ledger import (
    batches_between,
    newest_judged,
    newest_promotion,
    retrains_not_promoted,
    stored_report,
)


@dataclass(frozen=True)
class Staleness:
    reason: str | None  # "stale: ..." when a retrain is due, else None
    status: str  # what was found, for the sensor's skip message
    latest_key: str | None
    # Beside the age, what the newest verdict measured below its thresholds (realized error,
    # drift since the reference), so that a stale retrain says more than "old".
    evidence: tuple[str, ...] = ()

    @property
    def reasons(self) -> list[str]:
        return [self.reason, *self.evidence] if self.reason else []


def staleness(clean_conn: psycopg.Connection, settings: Settings) -> Staleness:
    """Is production due for a retrain without drift? Measured from the newest promotion."""
    latest = newest_judged(clean_conn)
    promoted = newest_promotion(clean_conn)
    if latest is None or promoted is None:
        return Staleness(None, "no production model trained by the loop yet", None)
    key, seq, drift_retrain, trained = latest
    if drift_retrain or trained:
        return Staleness(None, f"{key} is already retrained or on its way", key)
    trained_key, trained_seq, version, decided_at = promoted
    batches = batches_between(clean_conn, trained_seq, seq)
    hours = (datetime.now(UTC) - decided_at).total_seconds() / 3600
    status = f"production v{version} was trained through {trained_key}, {batches} batches and "
    status += f"{hours:.1f} h ago"
    if batches >= settings.stale_after_batches:
        reason = f"stale: {status} (limit {settings.stale_after_batches} batches)"
    elif hours >= settings.stale_after_hours:
        reason = f"stale: {status} (limit {settings.stale_after_hours:g} h)"
    else:
        return Staleness(None, status, key)
    report = stored_report(clean_conn, key)
    return Staleness(reason, status, key, tuple(evidence(report)) if report else ())


# ---------------------------------------------------------------- the freshness checks


@dataclass(frozen=True)
class CheckOutcome:
    """What a freshness check found: pass/fail, one sentence, and the numbers behind it."""

    passed: bool
    description: str
    metadata: dict[str, Any]
    warning: bool = False  # a failure worth a look rather than an error


def recent_cron_ticks(cron: str, now: datetime, count: int) -> list[datetime]:
    """The ``count`` latest ticks of ``cron`` (UTC) at or before ``now``, newest first."""
    # get_prev yields ticks strictly before its start: start just after now to include now.
    ticks = croniter(cron, now.astimezone(UTC) + timedelta(microseconds=1))
    return [ticks.get_prev(datetime) for _ in range(count)]


def landing_freshness(
    raw_conn: psycopg.Connection,
    cron: str,
    group_number: int,
    day: str,
    now: datetime | None = None,
) -> CheckOutcome:
    """Fails when no batch of the stream (``group_number``, ``day``) landed within two periods
    of the ingest schedule ``cron``.

    With t1 > t2 > t3 the three latest completed ticks, the last two periods are (t3, t2] and
    (t2, t1]: the check fails when the newest batch landed at or before t3, i.e. two scheduled
    fetches in a row brought nothing. Ticks, not a fixed interval, so irregular crons (weekdays
    only) are judged by their own gaps. A source that said it has delivered everything, after
    its newest batch, passes: nothing is late.
    """
    now = now or datetime.now(UTC)
    t1, t2, t3 = recent_cron_ticks(cron, now, 3)
    newest, exhausted = raw_conn.execute(
        "SELECT (SELECT max(fetched_at) FROM raw_batches WHERE group_number = %(g)s AND "
        "day = %(d)s), (SELECT exhausted_at FROM source_progress WHERE group_number = %(g)s AND "
        "day = %(d)s)",
        {"g": group_number, "d": day},
    ).fetchone()
    metadata: dict[str, Any] = {
        "stream": f"group {group_number}, {day}",
        "schedule": cron,
        "schedule_period_minutes": round((t1 - t2).total_seconds() / 60, 2),
        "deadline": t3.isoformat(),  # the newest batch must have landed after this
        "last_batch_at": newest.isoformat() if newest else None,
        "hours_since_last_batch": (
            round((now - newest).total_seconds() / 3600, 3) if newest else None
        ),
    }
    if newest is None:
        return CheckOutcome(False, "no batch has landed yet", metadata)
    since = f"the newest batch landed {metadata['hours_since_last_batch']:.2f} h ago"
    if exhausted is not None and exhausted >= newest:
        metadata["source_exhausted_at"] = exhausted.isoformat()
        return CheckOutcome(True, f"{since}; the source has delivered every batch", metadata)
    if newest > t3:
        return CheckOutcome(True, f"{since}, within two periods of {cron}", metadata)
    return CheckOutcome(
        False, f"{since}: no batch in the last two periods of {cron} (since {t3:%H:%M} UTC)",
        metadata,
    )  # fmt: skip


def ignored_verdicts(
    clean_conn: psycopg.Connection,
    group_number: int,
    day: str,
    production_version: str | None,
    trained_through: str | None,
    limit: int,
) -> CheckOutcome:
    """Fails when production has ignored more than ``limit`` retrain verdicts of the stream
    (``group_number``, ``day``).

    Ignored: a drift verdict with retrain = true on a batch of the stream landed after the
    newest batch production was trained on (``trained_through``, its version's ``partition``
    tag; every batch when there is no production) that did not produce a production version:
    its candidate lost the gate, or its training failed or has not finished yet.
    """
    keys = retrains_not_promoted(clean_conn, group_number, day, trained_through)
    metadata: dict[str, Any] = {
        "production_version": production_version,
        "trained_through": trained_through,
        "ignored_verdicts": len(keys),
        "ignored_batches": keys,
        "limit": limit,
    }
    who = f"production v{production_version}" if production_version else "no production model"
    summary = f"{len(keys)} retrain verdicts since {who} was trained"
    if trained_through:
        summary += f" (through {trained_through})"
    summary += " did not produce a new production version"
    if len(keys) > limit:
        return CheckOutcome(False, f"{summary}: more than {limit}", metadata)
    return CheckOutcome(True, f"{summary} (limit {limit})", metadata)
