"""Operations: liveness (/health), readiness (/ready), Prometheus metrics, the loaded model
versions, the admin reload."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from realty.settings import Settings
from serving import deps
from serving.model_holder import ModelHolder
from serving.schemas import HealthResponse, ModelsResponse, ReadyResponse, ReloadResponse

router = APIRouter(tags=["ops"])
bearer = HTTPBearer(auto_error=False, description="REALTY_SERVING_ADMIN_TOKEN")


# The probes are async: answered on the event loop even while every worker thread is busy.
@router.get("/health")
async def health(holder: ModelHolder = Depends(deps.model_holder)) -> HealthResponse:
    """Liveness: ``ok``, or ``degraded`` with the reason (registry unreachable, a model not
    loaded, a version refused); always 200 while the process answers. Per model: its status.
    Whether the service can take traffic is ``/ready``."""
    models = {name: slot.status() for name, slot in holder.slots.items()}
    reasons = [f"{name}: {m['reason']}" for name, m in models.items() if m["status"] != "ok"]
    return HealthResponse(
        status="degraded" if reasons else "ok", reason="; ".join(reasons) or None, models=models
    )


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "A required model is not loaded"}},
)
async def ready(
    holder: ModelHolder = Depends(deps.model_holder), settings: Settings = Depends(deps.settings)
) -> JSONResponse:
    """Readiness: 200 once every required model (the price model) has a version loaded, else
    503 naming what is missing and why; a registry that went away after the load does not
    make the service unready (it serves the loaded version)."""
    required = [settings.price_model_name]
    missing = {
        name: status["reason"]
        for name in required
        if (status := holder.slots[name].status())["status"] == "unavailable"
    }
    body = ReadyResponse(ready=not missing, missing=missing)
    return JSONResponse(body.model_dump(), status_code=503 if missing else 200)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format: requests and latency per route and model version, the
    inference log's queue and rows, model reloads; with several workers, all of theirs."""
    request.app.state.metrics.refresh()
    body = generate_latest(request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
def models(holder: ModelHolder = Depends(deps.model_holder)) -> ModelsResponse:
    """The versions loaded now, each model's last reload attempt and last failure, and its
    rollout (the challenger, its stage and share, whether it is loaded here)."""
    return ModelsResponse(
        models=[
            {
                "name": name,
                "loaded": slot.current.describe() if slot.current else None,
                "last_attempt": slot.last_attempt.describe() if slot.last_attempt else None,
                "last_failure": slot.last_failure.describe() if slot.last_failure else None,
                "rollout": slot.rollout(),
            }
            for name, slot in holder.slots.items()
        ],
        poll_interval_s=holder.poll_interval_s,
    )


@router.post(
    "/v1/admin/reload",
    responses={401: {"description": "Missing or wrong token"}, 403: {"description": "Disabled"}},
)
async def reload(
    holder: ModelHolder = Depends(deps.model_holder),
    settings: Settings = Depends(deps.settings),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> ReloadResponse:
    """Check the aliases now and load what changed (a version that failed before is retried).
    Needs ``Authorization: Bearer $REALTY_SERVING_ADMIN_TOKEN``."""
    token = settings.serving_admin_token and settings.serving_admin_token.get_secret_value()
    if not token:
        raise HTTPException(403, "admin reload is disabled: set REALTY_SERVING_ADMIN_TOKEN")
    if credentials is None or not _same_token(credentials.credentials, token):
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    attempts = await run_in_threadpool(holder.reload_all, True)
    return ReloadResponse(attempts={name: a.describe() for name, a in attempts.items()})


def _same_token(sent: str, token: str) -> bool:
    """Constant-time comparison of bytes: ``compare_digest`` refuses non-ASCII text with a
    TypeError, which made ``Authorization: Bearer é`` a 500."""
    return secrets.compare_digest(sent.encode(), token.encode())
