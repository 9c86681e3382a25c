"""Input limits applied before any work (docs/serving.md, "Input limits"): the request body size,
the number of images decoded at once, and 422 answers that can always be sent.

Each refusal is a 4xx whose detail says what is wrong and what the limit is, so a hostile or
careless client costs the process a few microseconds and never its memory.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from realty.settings import Settings

MAX_ECHOED_CHARS = 200  # of a refused value quoted back in a 422 (a 10 MB zip_code is not)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit. An ``HTTPException``, so that
    FastAPI's body parsing lets it through as it is (it turns other errors into a 400)."""

    def __init__(self, limit: int, size: int | None = None) -> None:
        if size is None:
            detail = f"the request body is larger than the limit of {limit:,} bytes"
        else:
            detail = f"the request body is {size:,} bytes; the limit is {limit:,} bytes"
        super().__init__(413, detail)


class BodyLimitMiddleware:
    """Refuses a body above its path's limit with a 413 before the app parses anything: from
    the ``Content-Length`` header when there is one (the app is not called), else by counting
    the bytes as they stream in (chunked uploads)."""

    def __init__(self, app: Any, max_bytes: int, max_bytes_by_path: Mapping[str, int]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_bytes_by_path = dict(max_bytes_by_path)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes_by_path.get(scope["path"], self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_too_large(scope, receive, send, BodyTooLarge(limit, declared))
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge as error:  # read outside FastAPI's body parsing
            if started:
                raise
            await _send_too_large(scope, receive, send, error)


def _content_length(scope: dict) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses such a request before it gets here
    return None


async def _send_too_large(scope: dict, receive: Any, send: Any, error: BodyTooLarge) -> None:
    # Connection: close, so the server does not wait for the rest of a body nobody will read.
    response = JSONResponse({"detail": error.detail}, 413, headers={"Connection": "close"})
    await response(scope, receive, send)


class ImageGate:
    """At most ``slots`` images are decoded and run through a model at once, and at most
    ``queue`` requests wait for a slot; a request beyond them gets a 429 with ``Retry-After``
    at once. Bounds the memory that decoded images can take, whatever the number of clients."""

    def __init__(self, slots: int, queue: int, retry_after_s: int = 1) -> None:
        self.slots = slots
        self.queue = queue
        self.retry_after_s = retry_after_s
        self._semaphore = asyncio.Semaphore(slots)
        self._admitted = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> ImageGate:
        return cls(settings.serving_image_slots, settings.serving_image_queue)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._admitted >= self.slots + self.queue:
            raise HTTPException(
                429,
                f"too many images at once: {self.slots} are being processed and {self.queue} "
                f"wait; retry in {self.retry_after_s} s",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self._admitted += 1
        try:
            async with self._semaphore:
                yield
        finally:
            self._admitted -= 1


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with the refused values made sendable: FastAPI quotes each one back, and
    a NaN (JSON has none), a lone surrogate (UTF-8 has none) or a 10 MB string made the 422
    itself fail with a 500."""
    return JSONResponse({"detail": _sendable(jsonable_encoder(error.errors()))}, 422)


def _sendable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, str):
        if len(value) > MAX_ECHOED_CHARS:
            value = f"{value[:MAX_ECHOED_CHARS]}... ({len(value):,} characters)"
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_sendable(item) for item in value]
    if isinstance(value, dict):
        return {_sendable(key): _sendable(item) for key, item in value.items()}
    return value
