"""What routes get injected: the settings, the model slots, the inference log writer."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException, Request

from realty.settings import Settings
from serving.inference_log import InferenceLogWriter, InferenceRecord
from serving.model_holder import LoadedModel, ModelHolder


def settings(request: Request) -> Settings:
    return request.app.state.settings


def model_holder(request: Request) -> ModelHolder:
    return request.app.state.models


def inference_log(request: Request) -> InferenceLogWriter:
    return request.app.state.inference_log


def serving_model(request: Request, name: str) -> LoadedModel:
    """The version of ``name`` serving now (read once: the request keeps it to the end), or 503
    saying why there is none; the version is recorded for /metrics."""
    slot = model_holder(request).slots[name]
    loaded = slot.current
    if loaded is None:
        why = slot.last_attempt.message if slot.last_attempt else "not loaded yet"
        raise HTTPException(
            503, f"no production version of {name!r} is loaded ({why}); promote one in MLflow"
        )
    request.state.model_version = loaded.version
    return loaded


def record(
    request_id: str,
    route: str,
    loaded: LoadedModel,
    latency_ms: float,
    item: int = 0,
    listing: dict | None = None,
    prediction: float | None = None,
    details: dict | None = None,
) -> InferenceRecord:
    """One inference log record of an answered prediction."""
    return InferenceRecord(
        request_id=request_id,
        item=item,
        logged_at=datetime.now(UTC),
        route=route,
        model_name=loaded.name,
        model_version=loaded.version,
        latency_ms=latency_ms,
        listing=listing,
        prediction=prediction,
        details=details,
    )
