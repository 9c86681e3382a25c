"""SQL of clean_data.unseen_residuals: production's log-price errors on each batch it had not
seen, which calibrate the intervals of the candidates trained after it (realty/verdict.py
writes them, realty/model/versions.py reads them)."""

from __future__ import annotations

import numpy as np
import psycopg

from realty.model.intervals import UnseenResiduals
from realty.store.clean import batches_through


def replace_residuals(
    clean_conn: psycopg.Connection, key: str, model_name: str, version: str, found: UnseenResiduals
) -> None:
    clean_conn.execute(
        "INSERT INTO unseen_residuals (batch_key, model_name, model_version, states, residuals) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (batch_key) DO UPDATE SET "
        "model_name = EXCLUDED.model_name, model_version = EXCLUDED.model_version, "
        "states = EXCLUDED.states, residuals = EXCLUDED.residuals, recorded_at = now()",
        (key, model_name, version, found.groups, found.residuals.astype("float32").tolist()),
    )


def residuals_through(
    clean_conn: psycopg.Connection, key: str, model_name: str
) -> UnseenResiduals | None:
    """Every batch's residuals of ``key``'s stream up to and including ``key``; None if none."""
    rows = clean_conn.execute(
        "SELECT states, residuals FROM unseen_residuals "
        "WHERE batch_key = ANY(%s) AND model_name = %s",
        (batches_through(clean_conn, key), model_name),
    ).fetchall()
    if not rows:
        return None
    groups = [group for states, _ in rows for group in states]
    residuals = np.concatenate([np.asarray(values, dtype="float64") for _, values in rows])
    return UnseenResiduals(groups, residuals, batches=len(rows))
