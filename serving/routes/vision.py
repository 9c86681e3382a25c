"""Object detection and counting: ``/v1/detect``, ``/v1/count`` and the course servers' routes.

``/v1/detect`` and ``/v1/count`` take a multipart form: ``file`` and the fields ``model``,
``confidence`` and (count) ``object``. The course's clients call
``POST /predict?model=yolov3-tiny&confidence=0.2`` (annotated JPEG) and
``POST /countObjects?model=...&confidence=...`` (count JSON) with the options in the query
string and a multipart ``file``; those answer exactly like ``/v1/detect`` and ``/v1/count``.
``/predict`` without the trailing slash is this module's; ``/predict/`` (digits, JSON) is not.

Decoding, inference and drawing run in the threadpool, never on the event loop. Every answered
request is logged (route, model, version, counts, latency; never the image) to the inference log.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from fastapi import (
    APIRouter,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
)
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from realty.settings import Settings
from serving.inference_log import InferenceRecord
from serving.vision.detection import Detection, Detectors, VisionError, decode_image, encode_jpeg


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's YOLO networks: installed ones load (and warm up) in the background at start."""
    app.state.detectors = Detectors(app.state.settings.yolo_weights_dir)
    threading.Thread(
        target=app.state.detectors.load_installed, name="yolo-preload", daemon=True
    ).start()
    yield


router = APIRouter(tags=["vision"], lifespan=lifespan)

OBJECT_MAX_CHARS = 100  # the longest COCO class name has 14
# Room for the multipart framing and the form fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


def upload_limits(settings: Settings) -> dict[str, int]:
    """The body limit of each upload route (every route of this router takes a file)."""
    limit = settings.vision_max_upload_bytes + FORM_OVERHEAD_BYTES
    return {route.path: limit for route in router.routes}


class VisionModel(StrEnum):
    yolov3_tiny = "yolov3-tiny"
    yolov3 = "yolov3"


MODEL_DOC = "yolov3-tiny (installed by `make install`) or yolov3"
CONFIDENCE_DOC = "Lowest class score of a reported box, 0..1"
OBJECT_DOC = (
    "Count only this COCO class (e.g. orange); unset = every object. "
    "A name the model does not know answers 422."
)

ImageUpload = Annotated[
    UploadFile, File(description="The photo: JPEG, PNG, WebP, BMP or TIFF (read from the bytes)")
]
# /v1 routes take their options as fields of the multipart form, next to the file.
ModelForm = Annotated[VisionModel, Form(description=MODEL_DOC)]
ConfidenceForm = Annotated[
    float, Form(ge=0.0, le=1.0, allow_inf_nan=False, description=CONFIDENCE_DOC)
]
ObjectForm = Annotated[
    str | None,
    Form(alias="object", max_length=OBJECT_MAX_CHARS, description=OBJECT_DOC, examples=["orange"]),
]
# The course routes take them in the query string, as their clients send them.
ModelQuery = Annotated[VisionModel, Query(description=MODEL_DOC)]
ConfidenceQuery = Annotated[
    float, Query(ge=0.0, le=1.0, allow_inf_nan=False, description=CONFIDENCE_DOC)
]
ObjectQuery = Annotated[
    str | None,
    Query(alias="object", max_length=OBJECT_MAX_CHARS, description=OBJECT_DOC, examples=["orange"]),
]


class DetectionOut(BaseModel):
    label: str = Field(description="COCO class name")
    confidence: float
    box: list[int] = Field(description="x1, y1, x2, y2 in pixels of the uploaded image")


class CountResponse(BaseModel):
    model: str = Field(examples=["yolov3-tiny"])
    model_version: str = Field(description="First 12 hex digits of the weights' sha256")
    confidence: float
    object: str | None = Field(description="The class counted; null = every object")
    count: int
    detections: list[DetectionOut] = Field(description="The boxes counted")


ERRORS = {
    400: {"description": "The image is corrupt or truncated"},
    413: {"description": "The upload is larger than REALTY_VISION_MAX_UPLOAD_BYTES"},
    415: {"description": "The upload is not an image of a supported type"},
    429: {"description": "Too many images at once (see Retry-After)"},
    503: {"description": "The model's weights are not installed (the message says how)"},
}
JPEG_RESPONSES = {
    200: {"content": {"image/jpeg": {}}, "description": "The photo with boxes and labels drawn"},
    **ERRORS,
}


@dataclass(frozen=True)
class Outcome:
    model: str
    model_version: str
    object: str | None  # the COCO class counted, as the model names it; None = every object
    detections: list[Detection]
    image_size: tuple[int, int]  # width, height
    jpeg: bytes | None  # the annotated image (detect routes only)


def run_detection(
    detectors: Detectors,
    data: bytes,
    settings: Settings,
    model: str,
    confidence: float,
    object_name: str | None,
    annotate: bool,
) -> Outcome:
    """Everything CPU-bound of one request, for the threadpool: decode, detect, draw, encode."""
    image = decode_image(data, settings.vision_max_upload_bytes, settings.vision_max_pixels)
    detector = detectors.get(model)
    wanted = detector.class_name(object_name) if object_name is not None else None
    detections = detector.detect(image, confidence)
    if wanted is not None:
        detections = [d for d in detections if d.label == wanted]
    height, width = image.shape[:2]
    jpeg = encode_jpeg(detector.annotate(image, detections)) if annotate else None
    return Outcome(detector.name, detector.version, wanted, detections, (width, height), jpeg)


async def serve_detection(
    request: Request,
    file: UploadFile,
    model: VisionModel,
    confidence: float,
    object_name: str | None,
    annotate: bool,
) -> tuple[str, Outcome]:
    """Run one request off the event loop, log it, and return its id and outcome."""
    started = time.perf_counter()
    settings = request.app.state.settings
    max_bytes = settings.vision_max_upload_bytes
    if file.size is not None and file.size > max_bytes:
        # Refused before the bytes are read into memory.
        raise HTTPException(413, f"the image is {file.size:,} bytes; the limit is {max_bytes:,}")
    data = await file.read(max_bytes + 1)
    try:
        async with request.app.state.image_gate.slot():
            outcome = await run_in_threadpool(
                run_detection,
                request.app.state.detectors,
                data,
                settings,
                model.value,
                confidence,
                object_name,
                annotate,
            )
    except VisionError as error:
        raise HTTPException(error.status_code, error.detail) from error
    request.state.model_version = outcome.model_version  # for /metrics
    request_id = uuid.uuid4().hex
    log_request(request, request_id, outcome, confidence, started)
    return request_id, outcome


def log_request(
    request: Request,
    request_id: str,
    outcome: Outcome,
    confidence: float,
    started: float,
) -> None:
    """The request's metadata to the inference log (never the image; non-blocking)."""
    width, height = outcome.image_size
    details = {
        "confidence": confidence,
        "object": outcome.object,
        "count": len(outcome.detections),
        "labels": dict(Counter(d.label for d in outcome.detections)),
        "image": {"width": width, "height": height},
    }
    record = InferenceRecord(
        request_id=request_id,
        item=0,
        logged_at=datetime.now(UTC),
        route=request.scope["route"].path,
        model_name=outcome.model,
        model_version=outcome.model_version,
        latency_ms=(time.perf_counter() - started) * 1000,
        listing=None,
        prediction=None,
        details=details,
    )
    request.app.state.inference_log.submit([record])


def model_headers(request_id: str, outcome: Outcome) -> dict[str, str]:
    return {
        "X-Request-Id": request_id,
        "X-Model-Name": outcome.model,
        "X-Model-Version": outcome.model_version,
        "X-Object-Count": str(len(outcome.detections)),
    }


async def detect_response(
    request: Request, file: UploadFile, model: VisionModel, confidence: float
) -> Response:
    request_id, outcome = await serve_detection(request, file, model, confidence, None, True)
    return Response(
        outcome.jpeg, media_type="image/jpeg", headers=model_headers(request_id, outcome)
    )


async def count_response(
    request: Request,
    response: Response,
    file: UploadFile,
    model: VisionModel,
    confidence: float,
    object_name: str | None,
) -> CountResponse:
    request_id, outcome = await serve_detection(
        request, file, model, confidence, object_name, False
    )
    response.headers.update(model_headers(request_id, outcome))
    return CountResponse(
        model=outcome.model,
        model_version=outcome.model_version,
        confidence=confidence,
        object=outcome.object,
        count=len(outcome.detections),
        detections=[
            DetectionOut(label=d.label, confidence=d.confidence, box=list(d.box))
            for d in outcome.detections
        ],
    )


@router.post("/v1/detect", response_class=Response, responses=JPEG_RESPONSES)
async def detect(
    request: Request,
    file: ImageUpload,
    model: ModelForm = VisionModel.yolov3_tiny,
    confidence: ConfidenceForm = 0.5,
) -> Response:
    """Detect the COCO objects in a photo; answers the photo with their boxes drawn (JPEG)."""
    return await detect_response(request, file, model, confidence)


@router.post("/v1/count", responses=ERRORS)
async def count(
    request: Request,
    response: Response,
    file: ImageUpload,
    model: ModelForm = VisionModel.yolov3_tiny,
    confidence: ConfidenceForm = 0.5,
    object_name: ObjectForm = None,
) -> CountResponse:
    """Count the objects (or one COCO class) in a photo, with each box."""
    return await count_response(request, response, file, model, confidence, object_name)


@router.post(
    "/predict", response_class=Response, responses=JPEG_RESPONSES, tags=["course compatibility"]
)
async def predict_compat(
    request: Request,
    file: ImageUpload,
    model: ModelQuery = VisionModel.yolov3_tiny,
    confidence: ConfidenceQuery = 0.5,
) -> Response:
    """The course server's detection route (same as ``/v1/detect``)."""
    return await detect_response(request, file, model, confidence)


@router.post("/countObjects", responses=ERRORS, tags=["course compatibility"])
async def count_objects_compat(
    request: Request,
    response: Response,
    file: ImageUpload,
    model: ModelQuery = VisionModel.yolov3_tiny,
    confidence: ConfidenceQuery = 0.5,
    object_name: ObjectQuery = None,
) -> CountResponse:
    """The course server's counting route (same as ``/v1/count``)."""
    return await count_response(request, response, file, model, confidence, object_name)
