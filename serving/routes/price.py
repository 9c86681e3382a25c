"""House prices: ``POST /v1/price/predict`` (1 to 1,000 listings) and ``POST /v1/price/explain``."""

from __future__ import annotations

import math
import time
import uuid

import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from realty.model.price_model import PricedRows
from realty.settings import Settings
from serving import deps, routing
from serving.schemas import ExplainRequest, ExplainResponse, PriceRequest, PriceResponse
from serving.shadow import ShadowJob

router = APIRouter(prefix="/v1/price", tags=["price"])

NO_MODEL = {503: {"description": "No production version of the price model is loaded"}}
ANSWERED_BY = {
    "X-Model-Version": {"schema": {"type": "string"}, "description": "e.g. 3, or 3,4 (canary)"},
    "X-Model-Arm": {"schema": {"type": "string"}, "description": "production and/or canary"},
}


@router.post(
    "/predict",
    response_model=PriceResponse,
    responses={200: {"headers": ANSWERED_BY}, **NO_MODEL},
)
async def predict_price(
    body: PriceRequest, request: Request, settings: Settings = Depends(deps.settings)
) -> JSONResponse:
    """Price each listing with the production version of the price model, or, during a canary
    step, the challenger for the listings routed to it (each prediction names its version and
    arm; so do the body's ``model`` and the ``X-Model-Version`` / ``X-Model-Arm`` headers)."""
    started = time.perf_counter()
    name = settings.price_model_name
    production, arm = deps.serving_model(request, name), deps.rollout_arm(request, name)
    listings = [listing.fields() for listing in body.listings]
    request_id, route = uuid.uuid4().hex, "/v1/price/predict"
    answers = await routing.price_listings(
        request.app.state.price_batcher, production, arm, listings, request_id
    )
    predictions: list[dict | None] = [None] * len(listings)
    records = []
    latency_ms = (time.perf_counter() - started) * 1000
    for answer in answers:
        records += _answer_records(request_id, route, latency_ms, answer, listings, predictions)
    request.app.state.inference_log.submit(records)
    if (shadow := routing.shadow_of(production, arm, answers)) is not None:
        loaded, items = shadow
        job = ShadowJob(loaded, request_id, route, items, [listings[i] for i in items])
        request.app.state.shadow.submit(job)
    versions = ",".join(dict.fromkeys(p["version"] for p in predictions))
    arms = ",".join(dict.fromkeys(p["arm"] for p in predictions))
    request.state.model_version, request.state.model_arm = versions, arms
    # Built by hand, not validated back through PriceResponse: this is the hot path.
    content = {
        "request_id": request_id,
        "model": {"name": name, "version": versions, "arm": arms},
        "predictions": predictions,
    }
    return JSONResponse(content, headers={"X-Model-Version": versions, "X-Model-Arm": arms})


def _answer_records(
    request_id: str,
    route: str,
    latency_ms: float,
    answer: routing.Answer,
    listings: list[dict],
    predictions: list[dict | None],
) -> list:
    """``answer``'s inference log records; its predictions go into ``predictions``."""
    loaded, role = answer.loaded, answer.role
    if answer.priced is None:  # a failed canary: logged as its failure, answered by production
        details = {"error": answer.error}
        return [
            deps.record(request_id, route, loaded, latency_ms, item, listings[item], None,
                        details, role=role)
            for item in answer.items
        ]  # fmt: skip
    records = []
    priced = zip(answer.items, answer.priced.price.tolist(), intervals(answer.priced), strict=True)
    for item, price, bound in priced:
        predictions[item] = {"price": price, "interval": bound, "version": loaded.version,
                             "arm": role}  # fmt: skip
        records.append(
            deps.record(request_id, route, loaded, latency_ms, item, listings[item], price,
                        None, bound, role=role)
        )  # fmt: skip
    return records


@router.post("/explain", responses={**NO_MODEL, 422: {"description": "Invalid listing"}})
def explain_price(
    body: ExplainRequest, request: Request, settings: Settings = Depends(deps.settings)
) -> ExplainResponse:
    """The listing's price and each feature's SHAP contribution to its log price, from the
    version that prices it on /predict: production, or the canary for a listing routed there
    (exact TreeSHAP; base value + contributions = log price)."""
    started = time.perf_counter()
    name = settings.price_model_name
    production, arm = deps.serving_model(request, name), deps.rollout_arm(request, name)
    listing, request_id = body.listing.fields(), uuid.uuid4().hex
    canary = routing.on_canary(arm, routing.listing_key(listing, request_id, 0))
    loaded, role = (arm.challenger, "canary") if canary else (production, "production")
    request.state.model_version, request.state.model_arm = loaded.version, role
    model = loaded.model
    priced = model.price_rows([listing], settings.price_interval_level)
    price, [interval] = float(priced.price[0]), intervals(priced)
    from realty.explain.explainer import explain  # numba, shap and matplotlib: loaded on first use

    try:
        shap = explain(model.estimator, model.features(pd.DataFrame([listing])), sample_size=1)
    except (ValueError, RuntimeError) as error:  # e.g. the median baseline has no trees
        raise HTTPException(
            409, f"version {loaded.version} ({model.name}) cannot be explained: {error}"
        ) from error
    contributions = sorted(
        (
            {"feature": name, "value": _plain(shap.sample.iloc[0][name]), "shap": float(value)}
            for name, value in zip(shap.feature_names, shap.values[0], strict=True)
        ),
        key=lambda item: -abs(item["shap"]),
    )
    latency_ms = (time.perf_counter() - started) * 1000
    details = {"explained": True}
    record = deps.record(
        request_id, "/v1/price/explain", loaded, latency_ms, 0, listing, price, details,
        interval, role=role,
    )  # fmt: skip
    request.app.state.inference_log.submit([record])
    return ExplainResponse(
        request_id=request_id,
        model={"name": loaded.name, "version": loaded.version, "arm": role},
        price=price,
        interval=interval,
        base_value=shap.base_value,
        log_price=shap.base_value + float(shap.values[0].sum()),
        contributions=contributions,
    )


def intervals(priced: PricedRows) -> list[dict[str, float] | None]:
    """The ``PriceInterval`` of each priced listing as JSON; None each from a model without a
    calibration (a version logged before intervals)."""
    if priced.low is None or priced.high is None:
        return [None] * len(priced.price)
    return [
        {"level": priced.level, "low": low, "high": high}
        for low, high in zip(priced.low.tolist(), priced.high.tolist(), strict=True)
    ]


def _plain(value: object) -> str | float | None:
    """A feature value as JSON: text, a finite number or null."""
    if isinstance(value, str):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None
