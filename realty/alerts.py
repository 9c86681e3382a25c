"""Alerts: an asset check that starts failing, or passes again, is a change a person should hear
about (docs/monitoring.md#alerts).

Dagster records every check evaluation; ``alert_sensor`` (realty_assets/alerts.py) hands each
new one to ``record``, which keeps the last verdict per check and partition and raises an alert
only on a change: ``firing`` when a check fails after passing (or on its first evaluation),
``resolved`` when it passes after failing. A check failing hour after hour is one alert, not
one per hour. ``deliver`` POSTs every undelivered alert as JSON to
``REALTY_ALERT_WEBHOOK_URL``, retrying a failed call on later ticks up to
``REALTY_ALERT_MAX_ATTEMPTS`` times; unset, alerts are only recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from realty.settings import Settings
from realty.store import alerts as store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of an asset check, as Dagster recorded it."""

    record_id: int
    asset: str
    check_name: str
    partition: str  # '' for an unpartitioned check
    passed: bool
    severity: str
    description: str | None
    run_id: str
    evaluated_at: datetime


def record(conn: psycopg.Connection, evaluation: Evaluation) -> str | None:
    """Keep ``evaluation``'s verdict; the state of the alert it raises (``firing`` or
    ``resolved``), or None when nothing changed. Idempotent: re-reading an evaluation raises
    nothing new."""
    e = evaluation
    with conn.transaction():
        failing_before = store.was_failing(conn, e.asset, e.check_name, e.partition)
        store.set_state(conn, e.asset, e.check_name, e.partition, not e.passed, e.record_id)
        changed = failing_before is True if e.passed else failing_before is not True
        if not changed:
            return None  # passing as before (or from the start), or still failing
        state = "resolved" if e.passed else "firing"
        alert = {
            "record_id": e.record_id,
            "raised_at": e.evaluated_at,
            "state": state,
            "asset": e.asset,
            "check_name": e.check_name,
            "partition": e.partition,
            "severity": e.severity,
            "description": e.description,
            "run_id": e.run_id,
        }
        return state if store.insert_alert(conn, alert) else None


def payload(alert: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The webhook's JSON body: the alert, a one-line summary and where to look in Dagster."""
    where = f"{alert['asset']}[{alert['partition']}]" if alert["partition"] else alert["asset"]
    return {
        "source": "realty",
        "alert_id": alert["alert_id"],
        "state": alert["state"],
        "summary": f"{alert['check_name']} on {where} {alert['state']}: "
        f"{alert['description'] or 'no description'}",
        "asset": alert["asset"],
        "check": alert["check_name"],
        "partition": alert["partition"] or None,
        "severity": alert["severity"],
        "description": alert["description"],
        "raised_at": alert["raised_at"].isoformat(),
        "run_id": alert["run_id"],
        "dagster_run_url": f"{settings.dagster_url}/runs/{alert['run_id']}",
    }


def deliver(settings: Settings, conn: psycopg.Connection) -> tuple[int, int]:
    """POST the undelivered alerts to the webhook, oldest first; (delivered, failed)."""
    if settings.alert_webhook_url is None:
        return 0, 0
    url = settings.alert_webhook_url.get_secret_value()
    delivered = failed = 0
    with httpx.Client(timeout=settings.alert_webhook_timeout_s) as client:
        for alert in store.undelivered(conn, settings.alert_max_attempts):
            error = _post(client, url, payload(alert, settings))
            store.mark_attempt(conn, alert["alert_id"], None if error else datetime.now(UTC), error)
            conn.commit()
            delivered, failed = delivered + (error is None), failed + (error is not None)
    return delivered, failed


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> str | None:
    """None if the receiver took the alert (2xx), else what went wrong."""
    try:
        response = client.post(url, json=body)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if response.is_success:
        return None
    log.warning("the alert webhook answered %s", response.status_code)
    return f"HTTP {response.status_code}: {response.text[:200]}"
