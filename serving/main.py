"""The FastAPI app factory: ``uvicorn --factory serving.main:create_app`` (``realty serve``)."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from threadpoolctl import threadpool_limits

from realty.settings import Settings, get_settings
from serving import model_holder as holders
from serving.batcher import PriceBatcher
from serving.inference_log import InferenceLogWriter
from serving.limits import BodyLimitMiddleware, ImageGate, validation_error
from serving.metrics import (
    MetricsMiddleware,
    ServingMetrics,
    batch_families,
    inference_log_families,
    reload_families,
    rollout_families,
    shadow_families,
)
from serving.routes import digits, history, monitoring, ops, price, rollout
from serving.routes import vision as vision_routes
from serving.shadow import ShadowScorer

# A registry that does not answer must not hold a reload for minutes (MLflow's defaults: 120 s
# timeout, 7 retries with backoff); the poller simply tries again at its next tick. No progress
# bars in the service's log.
MLFLOW_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

GIL_SWITCH_INTERVAL_S = 0.0005


def build_model_holder(settings: Settings) -> holders.ModelHolder:
    slots = [
        holders.ModelSlot(
            settings.price_model_name, holders.load_price_model, holders.smoke_price_model
        ),
        holders.ModelSlot(
            settings.digits_model_name, holders.load_digits_model, holders.smoke_digits_model
        ),
    ]
    return holders.ModelHolder(settings.mlflow_url, slots, settings.serving_poll_interval_s)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    for name, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(name, value)
    # One OpenMP thread per prediction: requests are the parallelism, and spinning OpenMP
    # workers on a shared machine made single-row predictions 100x slower.
    threadpool_limits(1)
    app.state.inference_log = InferenceLogWriter(settings)
    app.state.inference_log.start()
    app.state.models = build_model_holder(settings)
    await asyncio.to_thread(app.state.models.start)
    app.state.price_batcher = PriceBatcher(settings.price_interval_level)
    app.state.price_batcher.start()
    app.state.shadow = ShadowScorer(
        app.state.inference_log, settings.price_interval_level, settings.serving_shadow_queue
    )
    app.state.shadow.start()
    app.state.metrics.start()
    # The ~250,000 objects of the started process (libraries, models) never become garbage:
    # out of the collector's sight, a full collection takes 0 ms instead of ~0.5 s (measured;
    # it would stall every request in flight).
    gc.collect()
    gc.freeze()
    # A background thread (the alias poller: ~8 ms of CPU every tick, the inference log
    # writer) holding the GIL delays a request by up to the switch interval (default 5 ms).
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(switch_interval)
        gc.unfreeze()
        app.state.metrics.stop()
        await app.state.price_batcher.stop()
        await asyncio.to_thread(app.state.shadow.stop)
        app.state.models.stop()
        await asyncio.to_thread(app.state.inference_log.close)


def _collect(app: FastAPI) -> Iterator[Any]:
    """Metrics read from the inference log writer and the model slots at scrape time."""
    state = app.state
    if hasattr(state, "inference_log"):
        yield from inference_log_families(state.inference_log.stats())
    if hasattr(state, "models"):
        slots = state.models.slots
        loaded = {name: s.current.version for name, s in slots.items() if s.current}
        yield from reload_families({name: s.reloads for name, s in slots.items()}, loaded)
        yield from rollout_families({name: s.rollout_arm for name, s in slots.items()})
    if hasattr(state, "shadow"):
        yield from shadow_families(state.shadow.counts)
    if hasattr(state, "price_batcher"):
        yield from batch_families(state.price_batcher.requests, state.price_batcher.batches)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The serving app for ``settings`` (default: from the environment)."""
    app = FastAPI(
        title="realty serving",
        summary="House prices, object detection and counting, and digits, one front for all.",
        lifespan=lifespan,
        # /predict (vision, multipart) and /predict/ (digits, JSON) are different routes that
        # the course's clients call as spelled: never redirect one to the other.
        redirect_slashes=False,
    )
    app.state.settings = settings = settings or get_settings()
    app.state.metrics = ServingMetrics()
    app.state.metrics.add_collector(lambda: _collect(app))
    app.state.image_gate = ImageGate.for_settings(settings)
    app.add_exception_handler(RequestValidationError, validation_error)
    # Added first, so it runs inside the metrics middleware: refusals are counted too.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.serving_max_body_bytes,
        max_bytes_by_path=vision_routes.upload_limits(settings),
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    # The routers, one per domain (add yours here).
    app.include_router(ops.router)
    app.include_router(price.router)
    app.include_router(digits.router)
    app.include_router(vision_routes.router)
    app.include_router(history.router)
    app.include_router(rollout.router)
    app.include_router(monitoring.router)
    return app
