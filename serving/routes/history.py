"""Batch history: what each delivered batch became (rows landed, clean, rejected), its drift
verdict with the reasons and main scores, and what the learning loop did about it.

Read from RAW (``raw_batches``) and CLEAN (``clean_batches``, ``drift_reports``,
``model_decisions``) so that clients such as the web app never open a database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from realty.settings import Settings
from realty.store.ledger import BatchRecord, batch_history
from serving.deps import database

router = APIRouter(tags=["history"])


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
        None, description="Production's MAE on the batch relative to the MAE expected there"
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


def _history(settings: Settings) -> list[BatchRecord]:
    what = "batch history"
    with (
        database(settings, "raw_data", what) as raw,
        database(settings, "clean_data", what) as clean,
    ):
        return batch_history(raw, clean)


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


def _batch_history(record: BatchRecord) -> BatchHistory:
    judged = record.retrain is not None
    return BatchHistory(
        batch_key=record.key,
        batch_number=record.batch_number,
        landed_at=record.landed_at,
        rows_landed=record.rows_landed,
        rows_clean=record.rows_clean,
        rows_rejected=record.rows_rejected,
        rejects_by_reason=record.rejects_by_reason,
        verdict=("retrain" if record.retrain else "keep") if judged else None,
        reasons=record.reasons,
        compared_with_version=record.judged_against,
        scores=drift_scores(record.report) if record.report is not None else None,
        trained=record.candidate_version is not None,
        trigger=record.trigger,
        candidate_version=record.candidate_version,
        promoted=record.promoted,
        decision_reason=record.decision_reason,
        production_version=record.production_version,
    )


@router.get("/v1/batches", response_model=BatchesResponse)
def batches(request: Request) -> BatchesResponse:
    """Every landed batch in landing order, with what cleaning, drift and the gate made of it."""
    history = _history(request.app.state.settings)
    return BatchesResponse(batches=[_batch_history(record) for record in history])
