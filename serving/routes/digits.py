"""The 8x8 digits classifier: ``POST /v1/digits/predict`` and the course clients'
``POST /predict/``.

``/predict/`` (with the slash, JSON) is not ``/predict`` (vision, multipart): the app never
redirects one to the other (``redirect_slashes=False``)."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from realty.digits import ImageTooLarge, decode_base64_image, image_to_digit_features
from realty.model.rollout import CANARY
from realty.settings import Settings
from serving import deps, routing
from serving.model_holder import LoadedModel, RolloutArm
from serving.schemas import (
    CompatDigitsRequest,
    CompatDigitsResponse,
    DigitsRequest,
    DigitsResponse,
)
from serving.shadow import ShadowJob, digit_answers

log = logging.getLogger(__name__)

router = APIRouter(tags=["digits"])

LEGACY_MODEL_NAMES = ("clf.pickle",)  # the file name the course server loaded the model from
BAD_REQUEST = {
    400: {"description": "Missing or invalid model name or image"},
    413: {"description": "The image has more pixels than REALTY_DIGITS_MAX_PIXELS"},
    429: {"description": "Too many images at once (see Retry-After)"},
}


async def answer_digit(
    request: Request, settings: Settings, image: str, route: str, details: dict
) -> tuple[LoadedModel, int, str]:
    """(the version that read ``image``, its digit, its arm), logged with ``details``.

    The image is decoded, and read by production or, during a canary step and for the requests
    routed there (by request id), by the challenger, in the threadpool once an image slot is
    free; a challenger that fails is logged as its error and production answers. During a
    rollout the other arm reads the same features off the response path (``serving.shadow``)."""
    started = time.perf_counter()
    name = settings.digits_model_name
    production, arm = deps.serving_model(request, name), deps.rollout_arm(request, name)
    request_id = uuid.uuid4().hex
    canary = arm.challenger if routing.on_canary(arm, f"request:{request_id}") else None
    async with request.app.state.image_gate.slot():  # one threadpool hop: decode and read
        features, loaded, digit, failure = await run_in_threadpool(
            read_digit, image, settings.digits_max_pixels, production, canary
        )
    role = "canary" if loaded is canary else "production"
    latency_ms = (time.perf_counter() - started) * 1000
    records = [deps.record(request_id, route, loaded, latency_ms, details={**details,
               "prediction": digit}, role=role)]  # fmt: skip
    if failure is not None:
        failed = {"error": failure}
        records.append(
            deps.record(request_id, route, canary, latency_ms, details=failed, role="canary")
        )
    request.app.state.inference_log.submit(records)
    shadow = _shadow_model(production, arm, answered_by_canary=role == "canary")
    if shadow is not None:
        request.app.state.shadow.submit(
            ShadowJob(
                shadow, request_id, route, [0], [features], digit_answers, logged_inputs=False
            )
        )
    request.state.model_version, request.state.model_arm = loaded.version, role
    return loaded, digit, role


def _shadow_model(
    production: LoadedModel, arm: RolloutArm | None, answered_by_canary: bool
) -> LoadedModel | None:
    """Who reads the image unseen: the challenger in shadow, production beside a canary."""
    if arm is None:
        return None
    if arm.stage == CANARY:
        return production if answered_by_canary else None
    return arm.challenger


def digit_features(image: str, max_pixels: int) -> np.ndarray:
    try:
        return image_to_digit_features(decode_base64_image(image, max_pixels))
    except ImageTooLarge as error:
        raise HTTPException(413, f"Image too large: {error}") from error
    except ValueError as error:
        raise HTTPException(400, f"Invalid image: {error}") from error


def read_digit(
    image: str, max_pixels: int, production: LoadedModel, canary: LoadedModel | None
) -> tuple[np.ndarray, LoadedModel, int, str | None]:
    """(the image's features, who answered, the digit, the canary's failure if it failed)."""
    features, failure = digit_features(image, max_pixels), None
    if canary is not None:
        try:
            return features, canary, int(canary.model.predict(features)[0]), None
        except Exception as error:  # the canary's failure is a figure; production answers
            log.warning("digits canary v%s failed: %s", canary.version, error)
            failure = str(error)[:500]
    return features, production, int(production.model.predict(features)[0]), failure


@router.post("/v1/digits/predict", responses=BAD_REQUEST)
async def predict_digit(
    body: DigitsRequest, request: Request, settings: Settings = Depends(deps.settings)
) -> DigitsResponse:
    """The digit (0-9) in a base64 image, and the model version that read it."""
    details = {"client_request_id": body.request_id}
    loaded, prediction, arm = await answer_digit(
        request, settings, body.image, "/v1/digits/predict", details
    )
    return DigitsResponse(
        request_id=body.request_id,
        prediction=prediction,
        model={"name": loaded.name, "version": loaded.version, "arm": arm},
    )


@router.post("/predict/", responses=BAD_REQUEST)
async def predict_digit_compat(
    body: CompatDigitsRequest, request: Request, settings: Settings = Depends(deps.settings)
) -> CompatDigitsResponse:
    """The course servers' digits route: ``model`` is ``digits`` (or ``clf.pickle``)."""
    # The course server's checks, in its order: image, model name, known model.
    if not body.image:
        raise HTTPException(400, "Image data is required")
    if not body.model:
        raise HTTPException(400, "Model name is required")
    if body.model not in (settings.digits_model_name, *LEGACY_MODEL_NAMES):
        raise HTTPException(400, "Invalid model name")
    details = {"client_request_id": body.request_id, "model": body.model}
    _, prediction, _ = await answer_digit(request, settings, body.image, "/predict/", details)
    return CompatDigitsResponse(request_id=body.request_id, prediction=prediction)
