"""SQL of the late labels (realty/labels.py): the predictions of given listings in RAW's
inference log, and clean_data.price_labels and realized_performance."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

PREDICTION_COLUMNS = (
    "request_id", "item", "role", "model_name", "model_version", "predicted_at", "prediction",
    "interval_level", "interval_low", "interval_high", "listing_key",
)  # fmt: skip
LABEL_COLUMNS = (
    *PREDICTION_COLUMNS, "state", "label_batch", "label_kind", "realized_price", "labelled_at",
)  # fmt: skip


def predictions_of(
    raw_conn: psycopg.Connection, listing_keys: list[str], before: datetime
) -> pd.DataFrame:
    """The answered price predictions of these listings logged before ``before``."""
    rows = raw_conn.execute(
        "SELECT request_id, item, role, model_name, model_version, logged_at, prediction, "
        "interval_level, interval_low, interval_high, listing_key FROM inference_log "
        "WHERE listing_key = ANY(%s) AND logged_at < %s AND route = '/v1/price/predict' "
        "AND prediction IS NOT NULL",
        (listing_keys, before),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    frame["predicted_at"] = pd.to_datetime(frame["predicted_at"], utc=True)
    return frame


def replace_labels(clean_conn: psycopg.Connection, batch_key: str, labels: pd.DataFrame) -> int:
    """Batch ``batch_key``'s labels in place of those it gave before; a prediction an earlier
    batch labelled keeps that label. Returns how many the batch labels."""
    columns = ", ".join(LABEL_COLUMNS)
    with clean_conn.transaction():
        clean_conn.execute("DELETE FROM price_labels WHERE label_batch = %s", (batch_key,))
        clean_conn.execute(
            "CREATE TEMP TABLE price_labels_incoming (LIKE price_labels) ON COMMIT DROP"
        )
        with clean_conn.cursor().copy(f"COPY price_labels_incoming ({columns}) FROM STDIN") as copy:
            for row in labels[list(LABEL_COLUMNS)].itertuples(index=False):
                copy.write_row([None if pd.isna(v) else v for v in row])
        inserted = clean_conn.execute(
            f"INSERT INTO price_labels ({columns}) SELECT {columns} FROM price_labels_incoming "
            "ON CONFLICT (request_id, item, role) DO NOTHING"
        )
        return inserted.rowcount


def labels_of_batch(clean_conn: psycopg.Connection, batch_key: str) -> pd.DataFrame:
    rows = clean_conn.execute(
        f"SELECT {', '.join(LABEL_COLUMNS)} FROM price_labels WHERE label_batch = %s",
        (batch_key,),
    ).fetchall()
    return _labels_frame(rows)


def labels_of_version(
    clean_conn: psycopg.Connection, model_name: str, version: str
) -> pd.DataFrame:
    """Every label of a version's answered predictions (production and canary, not shadow)."""
    rows = clean_conn.execute(
        f"SELECT {', '.join(LABEL_COLUMNS)} FROM price_labels WHERE model_name = %s "
        "AND model_version = %s AND role <> 'shadow'",
        (model_name, version),
    ).fetchall()
    return _labels_frame(rows)


def _labels_frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    for column in ("predicted_at", "labelled_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def replace_performance(
    clean_conn: psycopg.Connection, batch_key: str, model_name: str, figures: dict[tuple, Any]
) -> None:
    """The batch's figures per (version, role) in place of any before, atomically."""
    with clean_conn.transaction():
        clean_conn.execute(
            "DELETE FROM realized_performance WHERE batch_key = %s AND model_name = %s",
            (batch_key, model_name),
        )
        for (version, role), values in figures.items():
            clean_conn.execute(
                "INSERT INTO realized_performance VALUES (%s, %s, %s, %s, %s)",
                (batch_key, model_name, version, role, Jsonb(values)),
            )


def landed_at(raw_conn: psycopg.Connection, batch_key: str) -> datetime:
    """When batch ``batch_key`` was fetched and landed in RAW."""
    row = raw_conn.execute(
        "SELECT fetched_at FROM raw_batches WHERE batch_key = %s", (batch_key,)
    ).fetchone()
    if row is None:
        raise KeyError(f"batch {batch_key} has not been landed")
    return row[0]


REALIZED_BY_VERSION = """
SELECT model_version, role, count(*) AS sales,
       avg(abs(prediction - realized_price)) AS mae_usd,
       avg(abs(prediction - realized_price) / realized_price) AS mape,
       avg(abs(ln(prediction / realized_price))) AS mae_log,
       avg(CASE WHEN realized_price BETWEEN interval_low AND interval_high THEN 1.0 ELSE 0.0 END)
           FILTER (WHERE interval_low IS NOT NULL) AS coverage,
       count(interval_low) AS coverage_n,
       max(labelled_at) AS last_labelled_at
FROM price_labels
WHERE model_name = %s AND label_kind = 'sale' AND prediction > 0 AND realized_price > 0
GROUP BY model_version, role ORDER BY max(labelled_at) DESC, model_version, role
"""


def realized_by_version(clean_conn: psycopg.Connection, model_name: str) -> list[dict[str, Any]]:
    """Per version and role, the error and interval coverage of every sale labelled so far,
    the version labelled last first."""
    with clean_conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(REALIZED_BY_VERSION, (model_name,)).fetchall()


REALIZED_BY_BATCH = """
SELECT r.batch_key, b.cleaned_at AS labelled_at, r.model_version, r.role,
       (r.figures->>'sales')::int AS sales, (r.figures->>'mae_log')::float AS mae_log,
       (r.figures->>'mape')::float AS mape, (r.figures->>'coverage')::float AS coverage
FROM realized_performance r JOIN clean_batches b USING (batch_key)
WHERE r.model_name = %s AND (r.figures->>'sales')::int > 0
ORDER BY b.seq DESC, r.model_version, r.role LIMIT %s
"""


def realized_by_batch(
    clean_conn: psycopg.Connection, model_name: str, limit: int = 500
) -> list[dict[str, Any]]:
    """Per labelling batch, version and role, what that batch's sales said (the
    realized_performance asset's figures), in landing order: realized error over time."""
    with clean_conn.cursor(row_factory=dict_row) as cursor:
        rows = cursor.execute(REALIZED_BY_BATCH, (model_name, limit)).fetchall()
    return rows[::-1]
