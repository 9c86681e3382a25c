"""CLEAN's record of the learning loop per partition: what was trained, why, and what the gate
decided (``model_decisions``), and the training snapshots behind each version."""

from __future__ import annotations

import json

import psycopg

from realty.model.gate import Challenge
from realty.model.versions import Trained


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
