"""``GET /v1/rollout``: the price model's rollout as this process follows it, the live figures
of its step per arm (the controller's guardrails) and the recorded moves, so that clients such
as the web app never open a database."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from realty.model import guardrails, rollout

log = logging.getLogger(__name__)

router = APIRouter(tags=["rollout"])


class RolloutView(BaseModel):
    model: str
    state: dict[str, Any] = Field(description="production, previous, challenger, stage, share…")
    summary: str = Field(examples=["production v3, challenger v4 in canary 5%"])
    figures: dict[str, Any] | None = Field(
        None, description="The step's live figures per arm (null without a rollout)"
    )
    guardrails: list[str] = Field([], description="The guardrails the figures fail now")
    events: list[dict[str, Any]] = Field(description="The latest moves, newest first")


@router.get("/v1/rollout", responses={503: {"description": "The record is not reachable"}})
def rollout_view(request: Request, events: int = 20) -> RolloutView:
    """The price model's rollout: state, the step's figures per arm, the recorded moves."""
    settings = request.app.state.settings
    name = settings.price_model_name
    state = request.app.state.models.slots[name].rollout_state
    try:
        live = guardrails.figures(settings, name, state) if state.step_started_at else None
        recorded = rollout.events(settings, name, min(max(events, 1), 200))
    except psycopg.OperationalError as error:
        log.warning("rollout view: the database is not reachable: %s", error)
        raise HTTPException(
            503, "the database is not reachable, so the rollout is unknown"
        ) from error
    return RolloutView(
        model=name,
        state=state.as_json(),
        summary=state.describe(),
        figures=live.as_json() if live else None,
        guardrails=guardrails.failed_guardrails(live, settings) if live else [],
        events=recorded,
    )
