"""Digits routes: the typed /v1 route and the course clients' /predict/, byte for byte."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.conftest import SHARED

DIGIT_EIGHT = SHARED / "data" / "images" / "digit2.jpg"  # an 8, whatever its name says


@pytest.fixture(scope="module")
def eight() -> str:
    return base64.b64encode(DIGIT_EIGHT.read_bytes()).decode()


def course_client_post(url: str, body: dict) -> httpx.Response:
    """The course client's call as it goes on the wire: `requests.post(url, json=body)`
    serialises with json.dumps' default separators and sends application/json."""
    return httpx.post(
        url,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "*/*"},
    )


def test_v1_digits_names_the_version_that_read_the_image(
    serving_server, production_models, eight
) -> None:
    response = httpx.post(
        f"{serving_server.url}/v1/digits/predict", json={"request_id": "r-1", "image": eight}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "request_id": "r-1",
        "prediction": 8,
        "model": {
            "name": "digits",
            "version": production_models.digits_version,
            "arm": "production",
        },
    }


@pytest.mark.parametrize("model", ["clf.pickle", "digits"])
def test_the_course_clients_call_gets_the_course_servers_answer(
    serving_server, eight, model
) -> None:
    body = {"request_id": "123", "model": model, "image": eight}
    response = course_client_post(f"{serving_server.url}/predict/", body)
    assert response.status_code == 200
    assert response.content == b'{"request_id":"123","prediction":8}'


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"request_id": "123", "image": "IMAGE"}, "Model name is required"),
        ({"request_id": "123", "model": "model.pickle", "image": "IMAGE"}, "Invalid model name"),
        ({"request_id": "123", "model": "clf.pickle"}, "Image data is required"),
        ({"request_id": "123", "model": "clf.pickle", "image": ""}, "Image data is required"),
    ],
)
def test_the_course_servers_400s(serving_server, eight, body, detail) -> None:
    body = {k: eight if v == "IMAGE" else v for k, v in body.items()}
    response = course_client_post(f"{serving_server.url}/predict/", body)
    assert response.status_code == 400
    assert response.json() == {"detail": detail}


def test_a_broken_image_is_a_400_that_says_why(serving_server) -> None:
    not_base64 = {"request_id": "1", "model": "digits", "image": "%%% not base64 %%%"}
    response = course_client_post(f"{serving_server.url}/predict/", not_base64)
    assert response.status_code == 400
    assert "base64" in response.json()["detail"]
    text = base64.b64encode(b"hello, this is no picture at all").decode()
    response = httpx.post(
        f"{serving_server.url}/v1/digits/predict", json={"request_id": "1", "image": text}
    )
    assert response.status_code == 400
    assert "not an image" in response.json()["detail"]


def test_predict_with_and_without_the_slash_are_different_routes(serving_server, eight) -> None:
    body = {"request_id": "1", "model": "digits", "image": eight}
    # /predict is the vision route (multipart); JSON there is refused, never redirected.
    no_slash = httpx.post(f"{serving_server.url}/predict", json=body)
    assert no_slash.status_code not in (200, 307, 308)
    assert "prediction" not in no_slash.text
    # and /v1/digits/predict/ (a slash too many) is not redirected to the route either
    extra_slash = httpx.post(f"{serving_server.url}/v1/digits/predict/", json=body)
    assert extra_slash.status_code == 404
