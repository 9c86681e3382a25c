"""SQL of the alerts (clean_data.check_states and clean_data.alerts; realty/alerts.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

ALERT_COLUMNS = (
    "alert_id, record_id, raised_at, state, asset, check_name, partition, severity, "
    "description, run_id, attempts, delivered_at, last_error"
)


def was_failing(conn: psycopg.Connection, asset: str, check: str, partition: str) -> bool | None:
    """The check's last recorded verdict on ``partition`` (locked until commit), None if none."""
    row = conn.execute(
        "SELECT failing FROM check_states WHERE asset = %s AND check_name = %s "
        "AND partition = %s FOR UPDATE",
        (asset, check, partition),
    ).fetchone()
    return None if row is None else row[0]


def set_state(
    conn: psycopg.Connection, asset: str, check: str, partition: str, failing: bool, record_id: int
) -> None:
    """Record a verdict; an older evaluation read late never overwrites a newer one."""
    conn.execute(
        "INSERT INTO check_states (asset, check_name, partition, failing, record_id) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (asset, check_name, partition) DO UPDATE "
        "SET failing = EXCLUDED.failing, record_id = EXCLUDED.record_id "
        "WHERE check_states.record_id < EXCLUDED.record_id",
        (asset, check, partition, failing, record_id),
    )


def insert_alert(conn: psycopg.Connection, alert: dict[str, Any]) -> bool:
    """Add an alert; False if its evaluation already raised one."""
    cursor = conn.execute(
        "INSERT INTO alerts (record_id, raised_at, state, asset, check_name, partition, "
        "severity, description, run_id) VALUES (%(record_id)s, %(raised_at)s, %(state)s, "
        "%(asset)s, %(check_name)s, %(partition)s, %(severity)s, %(description)s, %(run_id)s) "
        "ON CONFLICT (record_id) DO NOTHING",
        alert,
    )
    return cursor.rowcount == 1


def undelivered(conn: psycopg.Connection, max_attempts: int) -> list[dict[str, Any]]:
    """Alerts not delivered yet that have attempts left, oldest first."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE delivered_at IS NULL AND attempts < %s "
            "ORDER BY alert_id",
            (max_attempts,),
        ).fetchall()


def mark_attempt(
    conn: psycopg.Connection, alert_id: int, delivered_at: datetime | None, error: str | None
) -> None:
    conn.execute(
        "UPDATE alerts SET attempts = attempts + 1, delivered_at = %s, last_error = %s "
        "WHERE alert_id = %s",
        (delivered_at, error, alert_id),
    )


def recent_alerts(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest alerts first."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts ORDER BY alert_id DESC LIMIT %s", (limit,)
        ).fetchall()
