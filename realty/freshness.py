"""What the learning-loop sensors read from CLEAN: new drift verdicts, and how stale
production is (batches landed and hours passed since the data it was trained on)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from realty.settings import Settings


@dataclass(frozen=True)
class VerdictRow:
    key: str
    seq: int
    retrain: bool
    reasons: list[str]


def verdicts_after(clean_conn: psycopg.Connection, seq: int) -> list[VerdictRow]:
    """Drift verdicts of batches landed after ``seq``, in landing order."""
    rows = clean_conn.execute(
        """
        SELECT d.batch_key, c.seq, d.retrain, d.reasons
        FROM drift_reports d JOIN clean_batches c USING (batch_key)
        WHERE c.seq > %s ORDER BY c.seq
        """,
        (seq,),
    ).fetchall()
    return [VerdictRow(*row) for row in rows]


def newest_verdict_key(clean_conn: psycopg.Connection) -> str | None:
    row = clean_conn.execute(
        "SELECT d.batch_key FROM drift_reports d JOIN clean_batches c USING (batch_key) "
        "ORDER BY c.seq DESC LIMIT 1"
    ).fetchone()
    return row[0] if row else None


@dataclass(frozen=True)
class Staleness:
    reason: str | None  # "stale: ..." when a retrain is due, else None
    status: str  # what was found, for the sensor's skip message
    latest_key: str | None


def staleness(clean_conn: psycopg.Connection, settings: Settings) -> Staleness:
    """Is production due for a retrain without drift? Measured from the newest promotion."""
    latest = clean_conn.execute(
        """
        SELECT d.batch_key, c.seq, d.retrain, m.batch_key IS NOT NULL
        FROM drift_reports d JOIN clean_batches c USING (batch_key)
        LEFT JOIN model_decisions m USING (batch_key)
        ORDER BY c.seq DESC LIMIT 1
        """
    ).fetchone()
    promoted = clean_conn.execute(
        """
        SELECT m.batch_key, c.seq, m.production_version, m.decided_at
        FROM model_decisions m JOIN clean_batches c USING (batch_key)
        WHERE m.promoted ORDER BY m.decided_at DESC LIMIT 1
        """
    ).fetchone()
    if latest is None or promoted is None:
        return Staleness(None, "no production model trained by the loop yet", None)
    key, seq, drift_retrain, trained = latest
    if drift_retrain or trained:
        return Staleness(None, f"{key} is already retrained or on its way", key)
    trained_key, trained_seq, version, decided_at = promoted
    batches = clean_conn.execute(
        "SELECT count(*) FROM clean_batches WHERE seq > %s AND seq <= %s", (trained_seq, seq)
    ).fetchone()[0]
    hours = (datetime.now(UTC) - decided_at).total_seconds() / 3600
    status = f"production v{version} was trained through {trained_key}, {batches} batches and "
    status += f"{hours:.1f} h ago"
    if batches >= settings.stale_after_batches:
        reason = f"stale: {status} (limit {settings.stale_after_batches} batches)"
    elif hours >= settings.stale_after_hours:
        reason = f"stale: {status} (limit {settings.stale_after_hours:g} h)"
    else:
        return Staleness(None, status, key)
    return Staleness(reason, status, key)
