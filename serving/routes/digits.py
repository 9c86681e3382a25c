"""The 8x8 digits classifier: ``POST /v1/digits/predict`` and the course clients'
``POST /predict/``.

``/predict/`` (with the slash, JSON) is not ``/predict`` (vision, multipart): the app never
redirects one to the other (``redirect_slashes=False``)."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from realty.digits import ImageTooLarge, decode_base64_image, image_to_digit_features
from realty.settings import Settings
from serving import deps
from serving.model_holder import LoadedModel
from serving.schemas import (
    CompatDigitsRequest,
    CompatDigitsResponse,
    DigitsRequest,
    DigitsResponse,
)

router = APIRouter(tags=["digits"])

LEGACY_MODEL_NAMES = ("clf.pickle",)  # the file name the course server loaded the model from
BAD_REQUEST = {
    400: {"description": "Missing or invalid model name or image"},
    413: {"description": "The image has more pixels than REALTY_DIGITS_MAX_PIXELS"},
    429: {"description": "Too many images at once (see Retry-After)"},
}


async def classify(request: Request, loaded: LoadedModel, image: str) -> int:
    """The digit in ``image``, decoded and read in the threadpool once an image slot is free."""
    max_pixels = request.app.state.settings.digits_max_pixels
    async with request.app.state.image_gate.slot():
        return await run_in_threadpool(read_digit, loaded, image, max_pixels)


def read_digit(loaded: LoadedModel, image: str, max_pixels: int) -> int:
    try:
        features = image_to_digit_features(decode_base64_image(image, max_pixels))
    except ImageTooLarge as error:
        raise HTTPException(413, f"Image too large: {error}") from error
    except ValueError as error:
        raise HTTPException(400, f"Invalid image: {error}") from error
    return int(loaded.model.predict(features)[0])


def log_digit(
    request: Request, route: str, loaded: LoadedModel, started: float, details: dict
) -> None:
    latency_ms = (time.perf_counter() - started) * 1000
    record = deps.record(uuid.uuid4().hex, route, loaded, latency_ms, details=details)
    request.app.state.inference_log.submit([record])


@router.post("/v1/digits/predict", responses=BAD_REQUEST)
async def predict_digit(
    body: DigitsRequest, request: Request, settings: Settings = Depends(deps.settings)
) -> DigitsResponse:
    """The digit (0-9) in a base64 image, and the model version that read it."""
    started = time.perf_counter()
    loaded = deps.serving_model(request, settings.digits_model_name)
    prediction = await classify(request, loaded, body.image)
    details = {"client_request_id": body.request_id, "prediction": prediction}
    log_digit(request, "/v1/digits/predict", loaded, started, details)
    return DigitsResponse(
        request_id=body.request_id,
        prediction=prediction,
        model={"name": loaded.name, "version": loaded.version},
    )


@router.post("/predict/", responses=BAD_REQUEST)
async def predict_digit_compat(
    body: CompatDigitsRequest, request: Request, settings: Settings = Depends(deps.settings)
) -> CompatDigitsResponse:
    """The course servers' digits route: ``model`` is ``digits`` (or ``clf.pickle``)."""
    started = time.perf_counter()
    # The course server's checks, in its order: image, model name, known model.
    if not body.image:
        raise HTTPException(400, "Image data is required")
    if not body.model:
        raise HTTPException(400, "Model name is required")
    if body.model not in (settings.digits_model_name, *LEGACY_MODEL_NAMES):
        raise HTTPException(400, "Invalid model name")
    loaded = deps.serving_model(request, settings.digits_model_name)
    prediction = await classify(request, loaded, body.image)
    details = {"client_request_id": body.request_id, "model": body.model, "prediction": prediction}
    log_digit(request, "/predict/", loaded, started, details)
    return CompatDigitsResponse(request_id=body.request_id, prediction=prediction)
