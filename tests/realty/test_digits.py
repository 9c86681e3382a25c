"""realty.digits: the 8x8 digit classifier and the decoding of what clients send."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from realty.digits import (
    DigitsResult,
    ImageTooLarge,
    decode_base64_image,
    decode_image_bytes,
    image_to_digit_features,
    train_digits,
)
from realty_ops.hostile import npy_claiming, png_bomb


@pytest.fixture(scope="module")
def trained() -> DigitsResult:
    return train_digits(seed=0)


def photo_of(digit: np.ndarray, size: int = 64, fmt: str = "PNG", mode: str = "L") -> bytes:
    """A load_digits image as a client would photograph it: upscaled, dark ink on light paper."""
    pixels = (255 - digit.reshape(8, 8) / 16 * 255).astype(np.uint8)
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_held_out_accuracy(trained: DigitsResult) -> None:
    assert trained.accuracy >= 0.97
    assert trained.macro_f1 >= 0.97
    assert trained.n_train + trained.n_test == 1797 and trained.n_test == 450
    assert trained.confusion.shape == (10, 10) and trained.confusion.sum() == trained.n_test
    assert np.trace(trained.confusion) == round(trained.accuracy * trained.n_test)
    assert set(trained.metrics) == {"accuracy", "macro_f1"}
    probabilities = trained.model.predict_proba(trained.x_test[:5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_training_is_seeded() -> None:
    first, again = train_digits(seed=3), train_digits(seed=3)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert first.accuracy == again.accuracy


@pytest.mark.parametrize(
    ("fmt", "mode", "size"), [("PNG", "L", 64), ("JPEG", "RGB", 64), ("PNG", "RGB", 200)]
)
def test_round_trip_through_a_base64_image(
    trained: DigitsResult, fmt: str, mode: str, size: int
) -> None:
    rows = []
    for digit in trained.x_test:
        text = base64.b64encode(photo_of(digit, size, fmt, mode)).decode("ascii")
        features = image_to_digit_features(decode_base64_image(text))
        assert features.shape == (1, 64) and features.dtype == np.float64
        assert features.min() >= 0 and features.max() == 16
        rows.append(features)
    accuracy = float(np.mean(trained.model.predict(np.vstack(rows)) == trained.y_test))
    assert accuracy >= 0.9, accuracy


def test_data_url_and_raw_bytes_and_pil_agree(trained: DigitsResult) -> None:
    png = photo_of(trained.x_test[0])
    text = base64.b64encode(png).decode("ascii")
    from_data_url = image_to_digit_features(decode_base64_image(f"data:image/png;base64,{text}"))
    from_raw = image_to_digit_features(decode_base64_image(text))
    from_bytes = image_to_digit_features(png)
    from_pil = image_to_digit_features(Image.open(io.BytesIO(png)))
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))  # MIME line breaks
    from_wrapped = image_to_digit_features(decode_base64_image(wrapped.rstrip("=")))
    for other in (from_raw, from_bytes, from_pil, from_wrapped):
        np.testing.assert_array_equal(from_data_url, other)


def test_light_on_dark_and_transparent_canvas_match_dark_on_light(trained: DigitsResult) -> None:
    digit = trained.x_test[7]
    dark_on_light = image_to_digit_features(photo_of(digit))
    light_on_dark = 255 - np.asarray(Image.open(io.BytesIO(photo_of(digit))))
    np.testing.assert_allclose(image_to_digit_features(light_on_dark), dark_on_light, atol=1e-9)
    ink = 255 - np.asarray(Image.open(io.BytesIO(photo_of(digit))))  # alpha = ink, colour black
    canvas = np.zeros((*ink.shape, 4), dtype=np.uint8)
    canvas[..., 3] = ink
    np.testing.assert_allclose(image_to_digit_features(canvas), dark_on_light, atol=0.1)


def test_a_small_digit_on_a_big_page_is_cropped(trained: DigitsResult) -> None:
    digit = trained.x_test[11]
    page = np.full((400, 300), 230, dtype=np.uint8)
    page[250:314, 40:104] = np.asarray(Image.open(io.BytesIO(photo_of(digit)))) * 0.9
    features = image_to_digit_features(page)
    assert trained.model.predict(features)[0] == trained.y_test[11]


def test_8x8_arrays_in_digits_scale_pass_through_unchanged(trained: DigitsResult) -> None:
    digit = trained.x_test[3].reshape(8, 8)
    for value in (
        digit,
        digit.ravel(),
        digit.reshape(1, 64),
        digit.astype(np.uint8),
        digit.tolist(),
    ):
        features = image_to_digit_features(value)
        assert features.shape == (1, 64)
        np.testing.assert_array_equal(features, digit.reshape(1, 64))
    # the same array sent as base64 of a .npy file, a JSON array or the bare buffer
    npy = io.BytesIO()
    np.save(npy, digit)
    for payload in (
        npy.getvalue(),
        json.dumps(digit.tolist()).encode(),
        digit.tobytes(),  # float64, 512 bytes
        digit.astype(np.uint8).tobytes(),  # 64 bytes
        digit.astype(np.int32).tobytes(),  # 256 bytes
    ):
        decoded = decode_base64_image(base64.b64encode(payload).decode())
        np.testing.assert_array_equal(image_to_digit_features(decoded), digit.reshape(1, 64))


def test_8x8_arrays_on_the_0_255_scale_are_rescaled(trained: DigitsResult) -> None:
    digit = trained.x_test[5].reshape(8, 8)
    as_image = 255 - (digit / 16 * 255).astype(np.uint8)  # dark on light, 0-255
    features = image_to_digit_features(as_image)
    assert features.max() == 16
    assert np.abs(features - digit.reshape(1, 64)).mean() < 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("this is not base64!", "not valid base64"),
        ("abcde", "impossible length"),
        (base64.b64encode(b"hello, world").decode(), "are not an image"),
        (base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode(), "not an image"),
        ("data:image/png,iVBORw0KGgo=", "not base64-encoded"),
        (base64.b64encode(b'[1, 2, "x"]').decode(), "JSON array"),
    ],
)
def test_garbage_is_a_clear_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        image_to_digit_features(decode_base64_image(text))


def test_truncated_image_is_a_value_error(trained: DigitsResult) -> None:
    png = photo_of(trained.x_test[0])
    with pytest.raises(ValueError, match="broken PNG"):
        decode_image_bytes(png[: len(png) // 2])


def test_unusable_pixels_are_value_errors() -> None:
    with pytest.raises(ValueError, match="blank image"):
        image_to_digit_features(np.full((32, 32), 200, dtype=np.uint8))
    with pytest.raises(ValueError, match="non-negative"):
        image_to_digit_features(np.full((8, 8), -1.0))
    with pytest.raises(ValueError, match="finite"):
        image_to_digit_features(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="colour image"):
        image_to_digit_features(np.zeros((4, 4, 4, 4)))
    with pytest.raises(ValueError, match="numbers"):
        image_to_digit_features(np.array([["a"] * 8] * 8))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (png_bomb(), "13000x13000 PNG image has 169,000,000 pixels"),
        (npy_claiming((100_000, 100_000)), "shape (100000, 100000) has 10,000,000,000 pixels"),
        (json.dumps([[0] * 1000] * 500).encode(), "shape (500, 1000) has 500,000 pixels"),
    ],
    ids=["png-bomb", "npy-header", "json-array"],
)
def test_more_pixels_than_the_budget_are_refused_before_decoding(payload, message) -> None:
    with pytest.raises(ImageTooLarge, match=re.escape(message)):
        decode_image_bytes(payload, max_pixels=400_000)


def test_a_large_jpeg_is_decoded_at_the_least_reduction_that_fits(trained: DigitsResult) -> None:
    photo = photo_of(trained.x_test[0], size=1000, fmt="JPEG")  # 1,000,000 pixels
    assert decode_image_bytes(photo, max_pixels=400_000).shape == (500, 500)  # 1/2
    assert decode_image_bytes(photo, max_pixels=100_000).shape == (250, 250)  # 1/4
    with pytest.raises(ImageTooLarge, match="125x125 JPEG image has 15,625 pixels"):
        decode_image_bytes(photo, max_pixels=10_000)  # 1/8 is the most a JPEG decoder does
