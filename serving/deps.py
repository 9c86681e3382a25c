"""What routes get injected: the settings and the model slots.

The dependencies are ``async`` although they only read ``app.state``: FastAPI runs a plain
``def`` dependency in a worker thread, and that hop (two thread wake-ups) cost the price route
more than its prediction on a busy 2-core machine."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import psycopg
from fastapi import HTTPException, Request

from realty.schema import listing_identity
from realty.settings import Settings
from realty.store.db import connect
from serving.inference_log import InferenceRecord
from serving.model_holder import LoadedModel, ModelHolder, RolloutArm

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def model_holder(request: Request) -> ModelHolder:
    return request.app.state.models


def serving_model(request: Request, name: str) -> LoadedModel:
    """The version of ``name`` serving now (read once: the request keeps it to the end), or 503
    saying why there is none; the version is recorded for /metrics."""
    slot = request.app.state.models.slots[name]
    loaded = slot.current
    if loaded is None:
        why = slot.last_attempt.message if slot.last_attempt else "not loaded yet"
        raise HTTPException(
            503, f"no production version of {name!r} is loaded ({why}); promote one in MLflow"
        )
    request.state.model_version = loaded.version
    return loaded


def rollout_arm(request: Request, name: str) -> RolloutArm | None:
    """The challenger of ``name`` in rollout, if one is loaded (read once, like production)."""
    return request.app.state.models.slots[name].rollout_arm


def record(
    request_id: str,
    route: str,
    loaded: LoadedModel,
    latency_ms: float,
    item: int = 0,
    listing: dict | None = None,
    prediction: float | None = None,
    details: dict | None = None,
    interval: dict[str, float] | None = None,
    role: str = "production",
) -> InferenceRecord:
    """One inference log record of an answered prediction (``interval``: a price's
    ``{level, low, high}``)."""
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
        interval_level=interval["level"] if interval else None,
        interval_low=interval["low"] if interval else None,
        interval_high=interval["high"] if interval else None,
        role=role,
        listing_key=listing_identity(listing) if listing is not None else None,
    )


def database(settings: Settings, name: str, what: str) -> psycopg.Connection:
    """A connection to database ``name``, or 503 saying that ``what`` is unknown without it."""
    try:
        return connect(name, settings, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as error:
        log.warning("%s: %s is not reachable: %s", what, name, error)
        raise HTTPException(
            503, f"the {name} database is not reachable, so the {what} is unknown"
        ) from error
