"""Input limits of the serving API against a real `realty serve` process: every hostile request
of realty_ops.hostile gets its 4xx saying what is wrong, in order and all at once, the process
lives and its memory stays flat; a burst of images beyond the slots gets 429s."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

from realty.settings import Settings
from realty_ops.hostile import HostileRequest, hostile_requests
from realty_ops.memory import RssSampler
from realty_ops.sandbox import ServingProcess
from serving.limits import ImageGate
from serving.schemas import EXAMPLE_LISTING
from tests.serving.test_digits_routes import DIGIT_EIGHT

TOKEN = "test-admin-token"
CASES = hostile_requests(Settings().serving_max_body_bytes, Settings().vision_max_upload_bytes)


@pytest.fixture(scope="module")
def guarded_server(production_models) -> Iterator[ServingProcess]:
    """`realty serve` with the default limits and an admin token (so the token case is a 401)."""
    with ServingProcess(production_models.settings, REALTY_SERVING_ADMIN_TOKEN=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def client(guarded_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=guarded_server.url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_hostile_request_gets_its_4xx_saying_what_is_wrong(
    client: httpx.Client, case: HostileRequest
) -> None:
    response = case.send(client)
    assert response.status_code == case.expected, response.text[:500]
    assert case.says in response.text, response.text[:500]


def test_the_admin_reload_still_takes_the_right_token(client: httpx.Client) -> None:
    wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    right = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200, right.text


def test_a_body_just_under_the_limit_is_parsed(client: httpx.Client) -> None:
    # 1,000 listings with every field: well under 2 MiB, so the limit leaves room for any
    # request the schemas accept.
    response = client.post("/v1/price/predict", json={"listings": [EXAMPLE_LISTING] * 1000})
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["predictions"]) == 1000


def test_a_large_jpeg_photo_of_a_digit_is_read_at_a_reduced_scale(client: httpx.Client) -> None:
    # 2400x2400 = 5.8 Mpx, over the 400,000-pixel budget: decoded at 1/4 scale, not refused.
    eight = Image.open(DIGIT_EIGHT).convert("L").resize((2400, 2400), Image.Resampling.NEAREST)
    photo = io.BytesIO()
    eight.save(photo, "JPEG", quality=95)
    body = {"request_id": "big", "image": base64.b64encode(photo.getvalue()).decode()}
    response = client.post("/v1/digits/predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == 8
    # The same pixels as a PNG cannot be decoded at a reduced scale: refused from its header.
    png = io.BytesIO()
    eight.save(png, "PNG")
    body["image"] = base64.b64encode(png.getvalue()).decode()
    refused = client.post("/v1/digits/predict", json=body)
    assert refused.status_code == 413
    assert "2400x2400 PNG image has 5,760,000 pixels; the limit is 400,000" in refused.text


def test_hostile_requests_all_at_once_leave_the_process_alive_and_small(
    guarded_server: ServingProcess, client: httpx.Client
) -> None:
    with RssSampler(guarded_server.process.pid) as memory, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda case: (case, case.send(client)), CASES * 3))
    # Under load an image request may also be told to come back (429): a 4xx all the same.
    wrong = [
        (case.name, response.status_code)
        for case, response in answers
        if response.status_code not in (case.expected, 429)
    ]
    assert wrong == []
    assert guarded_server.process.poll() is None
    assert client.get("/health").status_code == 200
    # One decoded 13000x13000 PNG alone is 169 MB (1.4 GB as floats); 72 requests, 16 at a
    # time, must not add more than their bodies and parsed JSON.
    assert memory.peak_mb - memory.start_mb < 400, (memory.start_mb, memory.peak_mb)


def digit_image(side: int) -> str:
    """A PNG of a vertical stroke on white, ``side`` pixels square (slow to decode: ~45 ms)."""
    pixels = np.full((side, side), 255, np.uint8)
    pixels[side // 6 : side - side // 6, side // 2 - 15 : side // 2 + 15] = 0
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    return base64.b64encode(png.getvalue()).decode()


def test_a_burst_of_images_beyond_the_slots_and_queue_gets_429_with_retry_after(
    client: httpx.Client,
) -> None:
    settings = Settings()
    body = {"request_id": "burst", "image": digit_image(630)}  # 396,900 pixels
    burst = 4 * (settings.serving_image_slots + settings.serving_image_queue)
    with ThreadPoolExecutor(burst) as pool:
        answers = list(
            pool.map(lambda _: client.post("/v1/digits/predict", json=body), range(burst))
        )
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) == {200, 429}, statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.headers["Retry-After"] == "1"
    assert "too many images at once" in refused.json()["detail"]


def test_the_image_gate_admits_its_slots_then_its_queue_then_refuses() -> None:
    async def scenario() -> list[str]:
        gate = ImageGate(slots=1, queue=1)
        events: list[str] = []
        release = asyncio.Event()

        async def job(name: str) -> None:
            try:
                async with gate.slot():
                    events.append(f"{name} runs")
                    await release.wait()
            except HTTPException as error:
                events.append(f"{name} refused {error.status_code}")

        first = asyncio.create_task(job("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(job("second"))  # waits for the slot
        await asyncio.sleep(0)
        await job("third")  # one running, one waiting: no room
        release.set()
        await asyncio.gather(first, second)
        await job("fourth")  # all free again
        return events

    assert asyncio.run(scenario()) == [
        "first runs",
        "third refused 429",
        "second runs",
        "fourth runs",
    ]
