"""Batch history: what each delivered batch became (rows landed, clean, rejected), its drift
verdict with the reasons and main scores, and what the learning loop did about it.

Read from RAW (``raw_batches``) and CLEAN (``clean_batches``, ``drift_reports``,
``model_decisions``) so that clients such as the web app never open a database.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from realty.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["history"])

CONNECT_TIMEOUT_S = 5


class DriftScores(BaseModel):
    """The numbers behind a verdict (null when the report has none, e.g. the first batch)."""

    max_feature_psi: float | None = Field(None, description="Largest PSI of any input feature")
    max_psi_feature: str | None = Field(None, description="The feature with that PSI")
    target_psi: float | None = Field(None, description="PSI of log price")
    median_price_change: float | None = Field(None, description="Batch median / reference - 1")
    unseen_state_share: float | None = None
    unseen_city_share: float | None = None
    unseen_zip_share: float | None = None
    mae_change: float | None = Field(
        None, description="Production's MAE on the batch relative to its validation MAE"
    )


class BatchHistory(BaseModel):
    batch_key: str
    batch_number: int
    landed_at: datetime
    rows_landed: int
    rows_clean: int | None = Field(None, description="Null until the batch is cleaned")
    rows_rejected: int | None = None
    rejects_by_reason: dict[str, int] = {}
    verdict: Literal["retrain", "keep"] | None = Field(None, description="Null until judged")
    reasons: list[str] = []
    compared_with_version: str | None = Field(
        None, description="The production version the batch was judged against"
    )
    scores: DriftScores | None = None
    trained: bool = Field(False, description="A candidate was trained on the data through here")
    trigger: str | None = Field(None, description="initial, drift, stale or manual")
    candidate_version: str | None = None
    promoted: bool | None = Field(None, description="The gate's decision; null until it decides")
    decision_reason: str | None = None
    production_version: str | None = Field(None, description="Production after this batch")


class BatchesResponse(BaseModel):
    batches: list[BatchHistory]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _rows(settings: Settings, database: str, query: str) -> list[tuple[Any, ...]]:
    try:
        with psycopg.connect(
            settings.database_url(database), connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            return conn.execute(query).fetchall()
    except psycopg.OperationalError as error:
        log.warning("batch history: %s is not reachable: %s", database, error)
        raise HTTPException(
            503, f"the {database} database is not reachable, so the batch history is unknown"
        ) from error


def drift_scores(report: dict[str, Any]) -> DriftScores:
    """The main numbers of a ``realty.drift.DriftReport.to_dict()``."""
    features = [f for f in report.get("features") or [] if f.get("psi") is not None]
    top = max(features, key=lambda f: f["psi"], default=None)
    target = report.get("target") or {}
    unseen = report.get("unseen") or {}
    performance = report.get("performance") or {}
    metric = performance.get("metric")
    return DriftScores(
        max_feature_psi=top["psi"] if top else None,
        max_psi_feature=top["feature"] if top else None,
        target_psi=target.get("psi"),
        median_price_change=target.get("median_change"),
        unseen_state_share=(unseen.get("state") or {}).get("share"),
        unseen_city_share=(unseen.get("city") or {}).get("share"),
        unseen_zip_share=(unseen.get("zip_code") or {}).get("share"),
        mae_change=(performance.get("change") or {}).get(metric) if metric else None,
    )


def _by_batch(settings: Settings, query: str) -> dict[str, tuple[Any, ...]]:
    """CLEAN rows of ``query`` keyed by their first column, the batch key."""
    return {row[0]: row[1:] for row in _rows(settings, "clean_data", query)}


@router.get("/v1/batches", response_model=BatchesResponse)
def batches(request: Request) -> BatchesResponse:
    """Every landed batch in landing order, with what cleaning, drift and the gate made of it."""
    settings = _settings(request)
    landed = _rows(
        settings,
        "raw_data",
        "SELECT batch_key, batch_number, fetched_at, row_count FROM raw_batches ORDER BY seq",
    )
    cleaned = _by_batch(
        settings,
        "SELECT batch_key, clean_rows, rejected_rows, rejects_by_reason FROM clean_batches",
    )
    verdicts = _by_batch(
        settings,
        "SELECT batch_key, retrain, reasons, report, production_version FROM drift_reports",
    )
    decisions = _by_batch(
        settings,
        "SELECT batch_key, trigger, candidate_version, promoted, decision_reason, "
        "production_version FROM model_decisions",
    )
    history = []
    for key, number, fetched_at, row_count in landed:
        batch = BatchHistory(
            batch_key=key, batch_number=number, landed_at=fetched_at, rows_landed=row_count
        )
        if key in cleaned:
            batch.rows_clean, batch.rows_rejected, batch.rejects_by_reason = cleaned[key]
        if key in verdicts:
            retrain, reasons, report, compared_with = verdicts[key]
            batch.verdict = "retrain" if retrain else "keep"
            batch.reasons = reasons
            batch.scores = drift_scores(report)
            batch.compared_with_version = batch.production_version = compared_with
        if key in decisions:
            trigger, candidate, promoted, reason, after = decisions[key]
            batch.trained, batch.trigger, batch.candidate_version = True, trigger, candidate
            batch.promoted, batch.decision_reason = promoted, reason
            batch.production_version = after or batch.production_version
        history.append(batch)
    return BatchesResponse(batches=history)
