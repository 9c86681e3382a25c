"""SQL of clean_data.unseen_residuals: production's log-price errors on each batch it had not
seen, which calibrate the intervals of the candidates trained after it (realty/verdict.py
writes them, realty/model/versions.py reads them)."""

from __future__ import annotations

import numpy as np
import psycopg

from realty.model.intervals import UnseenResiduals
from realty.store.clean import batches_through

# A calibration reads the newest this many batches: errors of recent models on recent data, and
# at most a million residuals at 50,000 rows a batch.
NEWEST_BATCHES = 20


def replace_residuals(
    clean_conn: psycopg.Connection, key: str, model_name: str, version: str, found: UnseenResiduals
) -> None:
    clean_conn.execute(
        "INSERT INTO unseen_residuals (batch_key, model_name, model_version, states, residuals) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (batch_key, model_name) DO UPDATE SET "
        "model_version = EXCLUDED.model_version, "
        "states = EXCLUDED.states, residuals = EXCLUDED.residuals, recorded_at = now()",
        (key, model_name, version, found.groups, found.residuals.astype("float32").tolist()),
    )


def residuals_through(
    clean_conn: psycopg.Connection, key: str, model_name: str
) -> UnseenResiduals | None:
    """The residuals of the newest ``NEWEST_BATCHES`` batches of ``key``'s stream up to and
    including ``key`` that have them; None if none."""
    rows = clean_conn.execute(
        "SELECT u.states, u.residuals FROM unseen_residuals u "
        "JOIN unnest(%s::text[]) WITH ORDINALITY AS b(batch_key, n) USING (batch_key) "
        "WHERE u.model_name = %s ORDER BY b.n DESC LIMIT %s",
        (batches_through(clean_conn, key), model_name, NEWEST_BATCHES),
    ).fetchall()
    if not rows:
        return None
    groups = [group for states, _ in rows for group in states]
    residuals = np.concatenate([np.asarray(values, dtype="float64") for _, values in rows])
    return UnseenResiduals(groups, residuals, batches=len(rows))
