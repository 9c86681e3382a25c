"""What was served, how it turned out and what was raised: the price model's hourly served
windows (``clean_data.served_windows``, written by the served_traffic asset), its realized
error per version on the sales that came back (``clean_data.price_labels``, the
realized_performance asset) and the alerts (``clean_data.alerts``, alert_sensor), for the web
app's Monitoring tab."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from realty.store.alerts import recent_alerts
from realty.store.labels import realized_by_batch, realized_by_version
from realty.store.served import windows_since
from serving.deps import database

router = APIRouter(tags=["monitoring"])

WHAT = "monitoring record"


class ServedWindow(BaseModel):
    window_start: datetime
    version: str
    listings: int
    error_rate: float
    latency_ms: dict[str, float] = Field(description="p50, p95, p99")
    predictions: dict[str, float] = Field(description="p10, p50, p90 of the prices answered")
    missing: dict[str, float] = Field(description="Per field: the share of listings without it")
    drift_reasons: list[str] = Field(description="Why the window's inputs or outputs drifted")


class Alert(BaseModel):
    alert_id: int
    raised_at: datetime
    state: str = Field(description="firing or resolved")
    asset: str
    check_name: str
    partition: str
    severity: str
    description: str | None
    delivered_at: datetime | None = Field(description="Null until the webhook took it")
    attempts: int
    last_error: str | None


class Realized(BaseModel):
    version: str
    role: str = Field(description="production, canary or shadow: how the version answered")
    sales: int = Field(description="Sold listings it priced before the sale was known")
    mae_usd: float
    mape: float
    mae_log: float = Field(description="MAE of log price, comparable to its validation MAE")
    coverage: float | None = Field(description="Share of sold prices inside its interval")
    coverage_n: int = Field(description="Sales whose prediction had an interval")
    last_labelled_at: datetime


class RealizedBatch(BaseModel):
    batch_key: str = Field(description="The batch whose sales labelled the predictions")
    labelled_at: datetime
    version: str
    role: str
    sales: int
    mae_log: float
    mape: float
    coverage: float | None


class MonitoringResponse(BaseModel):
    model_name: str
    windows: list[ServedWindow] = Field(description="Oldest first")
    realized: list[Realized] = Field(description="Every sale so far; the newest labelled first")
    realized_over_time: list[RealizedBatch] = Field(
        description="Per labelling batch, version and role, the newest 500; oldest first"
    )
    alerts: list[Alert] = Field(description="Newest first")


@router.get("/v1/monitoring", response_model=MonitoringResponse)
def monitoring(
    request: Request,
    hours: int = Query(48, ge=1, le=24 * 90, description="Windows of the last this many hours"),
    since: datetime | None = Query(None, description="Windows from this time on, not `hours`"),
    alerts: int = Query(50, ge=0, le=1_000, description="This many newest alerts"),
) -> MonitoringResponse:
    settings = request.app.state.settings
    since = since or datetime.now(UTC) - timedelta(hours=hours)
    with database(settings, "clean_data", WHAT) as conn:
        windows = windows_since(conn, settings.price_model_name, since)
        raised = recent_alerts(conn, alerts)
        realized = realized_by_version(conn, settings.price_model_name)
        over_time = realized_by_batch(conn, settings.price_model_name)
    return MonitoringResponse(
        model_name=settings.price_model_name,
        windows=[_window(start, profile) for start, profile in windows],
        realized=[Realized(version=row.pop("model_version"), **row) for row in realized],
        realized_over_time=[
            RealizedBatch(version=row.pop("model_version"), **row) for row in over_time
        ],
        alerts=[Alert(**alert) for alert in raised],
    )


def _window(start: datetime, profile: dict[str, Any]) -> ServedWindow:
    return ServedWindow(
        window_start=start,
        version=profile["version"],
        listings=profile["listings"],
        error_rate=profile["error_rate"],
        latency_ms=profile["latency_ms"],
        predictions=profile["predictions"],
        missing=profile["missing"],
        drift_reasons=profile["drift"]["reasons"],
    )
