"""CLEAN's record of the learning loop per partition: what was trained, why, and what the gate
decided (``model_decisions``), the training snapshots behind each version, and the history of
every batch through the loop (``batch_history``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

if TYPE_CHECKING:  # the store writes what these hold; it needs neither MLflow nor the models
    from realty.model.gate import Challenge
    from realty.model.versions import Trained
    from realty.verdict import Verdict

log = logging.getLogger(__name__)


def record_training(
    clean_conn: psycopg.Connection, key: str, trained: Trained, trigger: str, reasons: list[str]
) -> None:
    snap = trained.snapshot
    with clean_conn.transaction():
        clean_conn.execute(
            """
            INSERT INTO training_snapshots (snapshot_hash, batch_keys, newest_batch_key, row_count)
            VALUES (%s, %s, %s, %s) ON CONFLICT (snapshot_hash) DO NOTHING
            """,
            (snap["content_sha256"], json.dumps(snap["batch_keys"]), key, snap["rows"]),
        )
        clean_conn.execute(
            """
            INSERT INTO model_decisions (batch_key, trigger, reasons, snapshot_hash, mlflow_run_id,
                candidate_version, candidate_metrics)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (batch_key) DO UPDATE SET trigger = EXCLUDED.trigger,
                reasons = EXCLUDED.reasons, snapshot_hash = EXCLUDED.snapshot_hash,
                mlflow_run_id = EXCLUDED.mlflow_run_id,
                candidate_version = EXCLUDED.candidate_version,
                candidate_metrics = EXCLUDED.candidate_metrics, promoted = NULL,
                decision_reason = NULL, production_version = NULL, production_metrics = NULL,
                decided_at = now()
            """,
            (
                key, trigger, json.dumps(reasons), snap["content_sha256"], trained.parent_run_id,
                trained.version.version, json.dumps(trained.best.metrics),
            ),
        )  # fmt: skip


def record_gate(clean_conn: psycopg.Connection, key: str, outcome: Challenge) -> None:
    with clean_conn.transaction():
        clean_conn.execute(
            """
            UPDATE model_decisions SET promoted = %s, decision_reason = %s,
                production_version = %s, production_metrics = %s, decided_at = now()
            WHERE batch_key = %s
            """,
            (
                outcome.decision.promote, outcome.decision.reason, outcome.production_version,
                json.dumps(outcome.production_metrics), key,
            ),
        )  # fmt: skip


def candidate_version(clean_conn: psycopg.Connection, key: str) -> str | None:
    row = clean_conn.execute(
        "SELECT candidate_version FROM model_decisions WHERE batch_key = %s", (key,)
    ).fetchone()
    return row[0] if row else None


# ---------------------------------------------------------------- drift verdicts


def store_verdict(clean_conn: psycopg.Connection, verdict: Verdict) -> None:
    with clean_conn.transaction():
        clean_conn.execute(
            """
            INSERT INTO drift_reports (batch_key, production_version, retrain, reasons, report)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (batch_key) DO UPDATE SET production_version = EXCLUDED.production_version,
                retrain = EXCLUDED.retrain, reasons = EXCLUDED.reasons,
                report = EXCLUDED.report, created_at = now()
            """,
            (
                verdict.key,
                verdict.production.version if verdict.production else None,
                verdict.report.retrain,
                json.dumps(verdict.report.reasons),
                json.dumps(verdict.report.to_dict()),
            ),
        )
    log.info("drift %s: retrain=%s %s", verdict.key, verdict.report.retrain, verdict.report.reasons)


@dataclass(frozen=True)
class StoredVerdict:
    retrain: bool
    reasons: list[str]
    production_version: str | None  # the version the batch was judged against


def stored_report(clean_conn: psycopg.Connection, key: str) -> dict[str, Any] | None:
    """Batch ``key``'s whole drift report (``DriftReport.to_dict()``), if it was judged."""
    row = clean_conn.execute(
        "SELECT report FROM drift_reports WHERE batch_key = %s", (key,)
    ).fetchone()
    return row[0] if row else None


def stored_verdict(clean_conn: psycopg.Connection, key: str) -> StoredVerdict | None:
    row = clean_conn.execute(
        "SELECT retrain, reasons, production_version FROM drift_reports WHERE batch_key = %s",
        (key,),
    ).fetchone()
    return StoredVerdict(*row) if row else None


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


def newest_verdict(
    clean_conn: psycopg.Connection, group_number: int, day: str
) -> VerdictRow | None:
    """The drift verdict of the stream's (``group_number``, ``day``) newest cleaned batch."""
    row = clean_conn.execute(
        "SELECT d.batch_key, c.seq, d.retrain, d.reasons "
        "FROM drift_reports d JOIN clean_batches c USING (batch_key) "
        "WHERE c.group_number = %s AND c.day = %s ORDER BY c.seq DESC LIMIT 1",
        (group_number, day),
    ).fetchone()
    return VerdictRow(*row) if row else None


def newest_judged(clean_conn: psycopg.Connection) -> tuple[str, int, bool, bool] | None:
    """The newest judged batch of any stream: key, landing seq, retrain, and whether a
    candidate was trained on it."""
    return clean_conn.execute(
        """
        SELECT d.batch_key, c.seq, d.retrain, m.batch_key IS NOT NULL
        FROM drift_reports d JOIN clean_batches c USING (batch_key)
        LEFT JOIN model_decisions m USING (batch_key)
        ORDER BY c.seq DESC LIMIT 1
        """
    ).fetchone()


def newest_promotion(clean_conn: psycopg.Connection) -> tuple[str, int, str, datetime] | None:
    """The batch whose candidate was promoted last: key, landing seq, version, decision time."""
    return clean_conn.execute(
        """
        SELECT m.batch_key, c.seq, m.production_version, m.decided_at
        FROM model_decisions m JOIN clean_batches c USING (batch_key)
        WHERE m.promoted ORDER BY m.decided_at DESC LIMIT 1
        """
    ).fetchone()


def batches_between(clean_conn: psycopg.Connection, after_seq: int, through_seq: int) -> int:
    """Cleaned batches landed after ``after_seq`` up to and including ``through_seq``."""
    return clean_conn.execute(
        "SELECT count(*) FROM clean_batches WHERE seq > %s AND seq <= %s", (after_seq, through_seq)
    ).fetchone()[0]


def retrains_not_promoted(
    clean_conn: psycopg.Connection, group_number: int, day: str, trained_through: str | None
) -> list[str]:
    """Batches of the stream landed after ``trained_through`` (every batch when None) whose
    verdict said retrain and that produced no production version, in landing order."""
    rows = clean_conn.execute(
        """
        SELECT d.batch_key FROM drift_reports d
        JOIN clean_batches c USING (batch_key)
        LEFT JOIN model_decisions m USING (batch_key)
        WHERE d.retrain AND m.promoted IS NOT TRUE
          AND c.group_number = %s AND c.day = %s
          AND c.seq > coalesce((SELECT seq FROM clean_batches WHERE batch_key = %s), 0)
        ORDER BY c.seq
        """,
        (group_number, day, trained_through),
    ).fetchall()
    return [key for (key,) in rows]


# ---------------------------------------------------------------- the history of every batch


@dataclass
class BatchRecord:
    """One landed batch and what the loop made of it; ``None`` where that step has not happened."""

    key: str
    batch_number: int
    landed_at: datetime
    rows_landed: int
    cleaned_at: datetime | None = None
    rows_clean: int | None = None
    rows_rejected: int | None = None
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    retrain: bool | None = None  # the drift verdict
    reasons: list[str] = field(default_factory=list)
    report: dict[str, Any] | None = None  # realty.drift.DriftReport.to_dict()
    judged_against: str | None = None  # the production version the verdict compared with
    trigger: str | None = None  # why a candidate was trained: initial, drift, stale, manual
    candidate_version: str | None = None
    promoted: bool | None = None  # the gate's decision
    decision_reason: str | None = None
    production_after_gate: str | None = None

    @property
    def production_version(self) -> str | None:
        """Production after this batch: the gate's outcome, else the version it was judged by."""
        return self.production_after_gate or self.judged_against


def batch_history(
    raw_conn: psycopg.Connection, clean_conn: psycopg.Connection
) -> list[BatchRecord]:
    """Every landed batch in landing order, with its cleaning, drift verdict and gate decision:
    the one reading of the loop's record behind the history route, the demo and status."""
    steps = {
        row[0]: row[1:]
        for row in clean_conn.execute(
            """
            SELECT c.batch_key, c.cleaned_at, c.clean_rows, c.rejected_rows, c.rejects_by_reason,
                d.retrain, coalesce(d.reasons, '[]'::jsonb), d.report, d.production_version,
                m.trigger, m.candidate_version, m.promoted, m.decision_reason,
                m.production_version
            FROM clean_batches c
            LEFT JOIN drift_reports d USING (batch_key)
            LEFT JOIN model_decisions m USING (batch_key)
            """
        )
    }
    landed = raw_conn.execute(
        "SELECT batch_key, batch_number, fetched_at, row_count FROM raw_batches ORDER BY seq"
    )
    return [BatchRecord(*row, *steps.get(row[0], ())) for row in landed]
