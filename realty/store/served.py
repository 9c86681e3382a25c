"""SQL of clean_data.served_windows: what each version served, hour by hour (realty/served.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def replace_window(
    conn: psycopg.Connection, start: datetime, model_name: str, profiles: list[dict[str, Any]]
) -> None:
    """The window's profiles (``ServedProfile.to_dict()``) in place of any before, atomically."""
    with conn.transaction():
        conn.execute(
            "DELETE FROM served_windows WHERE window_start = %s AND model_name = %s",
            (start, model_name),
        )
        for profile in profiles:
            conn.execute(
                "INSERT INTO served_windows (window_start, model_name, model_version, profile) "
                "VALUES (%s, %s, %s, %s)",
                (start, model_name, profile["version"], Jsonb(profile)),
            )


def windows_since(
    conn: psycopg.Connection, model_name: str, since: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """(window start, profile) of every version's window from ``since`` on, oldest first."""
    return conn.execute(
        "SELECT window_start, profile FROM served_windows "
        "WHERE model_name = %s AND window_start >= %s ORDER BY window_start, model_version",
        (model_name, since),
    ).fetchall()
