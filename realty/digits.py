"""The ``digits`` model: an 8x8 handwritten-digit classifier, and what turns client images into
its input.

Training data is scikit-learn's bundled ``load_digits`` (1,797 images, 8x8, values 0-16: the
count of inked pixels in each 4x4 block of a 32x32 bitmap, so ink is high and background 0;
every digit spans the full height and sits centred). The model is an RBF SVC (gamma 0.001,
C 10) wrapped in ``CalibratedClassifierCV(method="temperature", ensemble=False)`` so that it
has ``predict_proba`` without the ``SVC(probability=True)`` that scikit-learn 1.9 deprecates;
it scores about 0.99 accuracy on a held-out quarter.

Clients of the course server send either (a) an 8x8 array in digits scale (0-16), which is used
as is, or (b) any grayscale/RGB(A) image of one digit (PNG/JPEG/... bytes, usually base64),
which ``image_to_digit_features`` maps the way the digits data was made:

1. grayscale in [0, 1] (transparent pixels are composited onto a background that contrasts
   with the strokes);
2. ink made bright: inverted when the border (the background) is lighter than the middle of
   the range, as photos and canvas drawings are dark-on-light;
3. background level subtracted and contrast stretched to [0, 1];
4. cropped to the ink's bounding box and padded to a centred square (so the digit spans the
   full height, like the training images; skipped for images that are already 8x8);
5. resized to 8x8 by area averaging (anti-aliased), then scaled so the brightest cell is 16.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

DIGIT_SIDE = 8
DIGIT_MAX = 16.0
INK_THRESHOLD = 0.2
"""Share of the stretched intensity range above which a pixel counts as ink for the crop."""

ImageInput = np.ndarray | Image.Image | bytes | bytearray | memoryview

MAX_PIXELS = 400_000
"""Default budget of a decoded client image (REALTY_DIGITS_MAX_PIXELS, what serving passes):
decoding cost grows with pixels, and 37 KB of PNG can hold 13000x13000 of them."""
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
Image.init()  # Pillow's format plugins now, not on a client's first image (~1 s on a busy machine)
JPEG_REDUCTIONS = (1, 2, 4, 8)  # the scales a JPEG decoder can decode at directly


class ImageTooLarge(ValueError):
    """A client image with more pixels than the budget, refused before it is decoded."""

    def __init__(self, what: str, pixels: int, max_pixels: int) -> None:
        super().__init__(
            f"the {what} has {pixels:,} pixels; the limit is {max_pixels:,} "
            f"(the model reads 8x8: send a smaller picture)"
        )


@dataclass(frozen=True, eq=False)
class DigitsResult:
    """A trained digits classifier and its held-out evaluation."""

    model: Any
    accuracy: float
    macro_f1: float
    n_train: int
    n_test: int
    seed: int
    seconds: float
    params: dict[str, Any]
    confusion: np.ndarray  # rows: true digit, columns: predicted digit
    x_test: np.ndarray = field(repr=False)  # (n_test, 64) float, 0-16
    y_test: np.ndarray = field(repr=False)

    @property
    def metrics(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1}


def make_digits_model(seed: int = 0) -> Any:
    """The unfitted estimator (input: (n, 64) floats 0-16; output: digit 0-9, probabilities)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    return CalibratedClassifierCV(
        SVC(kernel="rbf", gamma=0.001, C=10.0, random_state=seed),
        method="temperature",
        ensemble=False,
    )


def train_digits(seed: int = 0, test_size: float = 0.25) -> DigitsResult:
    """Fit on a stratified, seeded split of ``load_digits`` and score the held-out part."""
    from sklearn.datasets import load_digits
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import train_test_split

    started = time.perf_counter()
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=test_size, stratify=data.target, random_state=seed
    )
    model = make_digits_model(seed).fit(x_train, y_train)
    predicted = model.predict(x_test)
    result = DigitsResult(
        model=model,
        accuracy=float(accuracy_score(y_test, predicted)),
        macro_f1=float(f1_score(y_test, predicted, average="macro")),
        n_train=len(y_train),
        n_test=len(y_test),
        seed=seed,
        seconds=time.perf_counter() - started,
        params={
            "model": "CalibratedClassifierCV(SVC rbf, method=temperature, ensemble=False)",
            "svc_gamma": 0.001,
            "svc_C": 10.0,
            "test_size": test_size,
            "seed": seed,
        },
        confusion=confusion_matrix(y_test, predicted, labels=list(range(10))),
        x_test=x_test,
        y_test=y_test,
    )
    log.info(
        "digits: accuracy %.4f, macro F1 %.4f on %d held-out images (%.1f s)",
        result.accuracy,
        result.macro_f1,
        result.n_test,
        result.seconds,
    )
    return result


# --------------------------------------------------------------------------------------------
# Decoding what clients send


_DATA_URL = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),", re.IGNORECASE)
_NPY_MAGIC = b"\x93NUMPY"


def decode_base64_image(text: str | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode base64 (raw or a ``data:`` URL) into a pixel array.

    The payload may be an image file (PNG, JPEG, BMP, GIF, WebP, TIFF: returned as uint8
    HxW, HxWx2/3/4 or uint16 HxW as decoded), a ``.npy`` array, a JSON array of numbers, or
    64 raw pixel values (64 bytes as uint8; 256 bytes as float32/int32; 512 bytes as
    float64/int64). Anything else raises ``ValueError`` saying what was wrong; more than
    ``max_pixels`` values raise ``ImageTooLarge`` (a ``ValueError``) before they are decoded.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError("base64 text must be ASCII") from exc
    if not isinstance(text, str):
        raise ValueError(f"expected base64 text, got {type(text).__name__}")
    payload = text.strip()
    match = _DATA_URL.match(payload)
    if match:
        if "base64" not in match.group("params").lower():
            raise ValueError("the data: URL is not base64-encoded (no ;base64)")
        payload = payload[match.end() :]
    payload = re.sub(r"\s+", "", payload).translate(str.maketrans("-_", "+/")).rstrip("=")
    if not payload:
        raise ValueError("empty image: the base64 text holds no data")
    if len(payload) % 4 == 1:
        raise ValueError("not valid base64: the text has an impossible length")
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64: {exc}") from exc
    return decode_image_bytes(raw, max_pixels)


def decode_image_bytes(
    raw: bytes | bytearray | memoryview, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Pixel array from image file bytes, ``.npy`` bytes, JSON array text or 64 raw values
    (at most ``max_pixels`` values, checked from the header before decoding)."""
    raw = bytes(raw)
    if not raw:
        raise ValueError("empty image: no bytes")
    if raw.startswith(_NPY_MAGIC):
        try:
            _check_npy_size(raw, max_pixels)
            return _checked(np.load(io.BytesIO(raw), allow_pickle=False), max_pixels)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"broken .npy array: {exc}") from exc
    image = _open_image(raw, max_pixels)
    if image is not None:
        return _image_array(image)
    if raw.lstrip()[:1] == b"[":
        try:
            return _checked(np.asarray(json.loads(raw), dtype=float), max_pixels)
        except ImageTooLarge:
            raise
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"not an image and not a JSON array of numbers: {exc}") from exc
    array = _raw_pixels(raw)
    if array is not None:
        return array
    raise ValueError(
        f"the {len(raw)} decoded bytes are not an image (PNG, JPEG, ...), a .npy array, a JSON "
        "array or 64 raw pixel values"
    )


def _check_npy_size(raw: bytes, max_pixels: int) -> None:
    """The shape in a ``.npy`` header, checked before ``np.load`` allocates it."""
    stream = io.BytesIO(raw)
    version = np.lib.format.read_magic(stream)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise ValueError(f"broken .npy array: unsupported format version {version}")
    shape = readers[version](stream)[0]
    if math.prod(shape) > max_pixels:
        raise ImageTooLarge(f".npy array of shape {shape}", math.prod(shape), max_pixels)


def _open_image(raw: bytes, max_pixels: int) -> Image.Image | None:
    """The image file in ``raw`` decoded (None if it is none), its size checked first."""
    try:
        image = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge("image", _bomb_pixels(exc), max_pixels) from exc
    except (OSError, ValueError, SyntaxError):
        return None
    _reduce_jpeg(image, max_pixels)
    if image.width * image.height > max_pixels:
        what = f"{image.width}x{image.height} {image.format} image"
        raise ImageTooLarge(what, image.width * image.height, max_pixels)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"broken {image.format or 'image'} file: {exc}") from exc
    return image


def _bomb_pixels(error: Image.DecompressionBombError) -> int:
    """The pixel count in Pillow's message ("Image size (N pixels) exceeds ...")."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else 0


def _reduce_jpeg(image: Image.Image, max_pixels: int) -> None:
    """A JPEG over the budget is decoded at 1/2, 1/4 or 1/8 of its size (the least reduction
    that fits), which costs less than decoding it whole: a phone photo of a digit still reads."""
    if image.format != "JPEG" or image.width * image.height <= max_pixels:
        return
    for scale in JPEG_REDUCTIONS:
        if math.ceil(image.width / scale) * math.ceil(image.height / scale) <= max_pixels:
            break
    image.draft(image.mode, (math.ceil(image.width / scale), math.ceil(image.height / scale)))


def _image_array(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("L" if image.mode == "1" else "RGB")
    elif image.mode == "I;16B":
        image = image.convert("I;16")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    return np.asarray(image)


def _raw_pixels(raw: bytes) -> np.ndarray | None:
    """64 pixel values sent as a bare buffer (``array.tobytes()``)."""
    candidates = {64: (np.uint8,), 256: (np.float32, np.int32), 512: (np.float64, np.int64)}
    for dtype in candidates.get(len(raw), ()):
        values = np.frombuffer(raw, dtype=dtype).astype(float)
        if np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 255:
            if dtype in (np.float32, np.float64) and 0 < values.max() < 1e-30:
                continue  # integers read as floats are denormals: try the integer reading
            return values.reshape(DIGIT_SIDE, DIGIT_SIDE)
    return None


def _checked(array: np.ndarray, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise ValueError(f"pixel values must be numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError("empty pixel array")
    if array.size > max_pixels:
        raise ImageTooLarge(f"array of shape {array.shape}", array.size, max_pixels)
    return array


# --------------------------------------------------------------------------------------------
# Features


def image_to_digit_features(image: ImageInput | Any) -> np.ndarray:
    """The model's input, shape (1, 64) float in [0, 16], for one digit.

    ``image``: an 8x8 (or 64-value) array already in digits scale (max <= 16; returned
    unchanged), any other 2-D grayscale or HxWx3/4 RGB(A) array (uint8, uint16 or float),
    a PIL image, or image file bytes (see ``decode_image_bytes``).
    """
    if isinstance(image, bytes | bytearray | memoryview):
        image = decode_image_bytes(image)
    if isinstance(image, Image.Image):
        image.load()
        image = _image_array(image)
    array = _checked(np.asarray(image))
    if array.dtype == bool:
        array = array.astype(float)
    values = array.astype(float)
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise ValueError("pixel values must be finite and non-negative")
    if values.squeeze().shape in ((DIGIT_SIDE, DIGIT_SIDE), (DIGIT_SIDE * DIGIT_SIDE,)):
        flat = values.reshape(1, -1)
        if flat.max() <= DIGIT_MAX:  # digits scale already: the course clients' 8x8 arrays
            return flat
        array = array.reshape(DIGIT_SIDE, DIGIT_SIDE)  # 8x8 on another scale (0-255)
    gray = _grayscale(array)
    return _featurise(gray).reshape(1, -1)


def _grayscale(array: np.ndarray) -> np.ndarray:
    """2-D float image in [0, 1] (alpha composited onto a background contrasting the ink)."""
    values = array.astype(float)
    if array.dtype == np.uint8:
        values /= 255.0
    elif array.dtype == np.uint16 or array.dtype.kind in "iu":
        values /= 65535.0 if values.max() > 255 else 255.0
    elif values.max() > 1.0:  # floats on a 0-255 scale (or anything larger)
        values /= 255.0 if values.max() <= 255.0 else values.max()
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim == 2:
        return values
    if values.ndim != 3 or values.shape[2] not in (2, 3, 4):
        raise ValueError(
            f"expected a 2-D grayscale or HxWx3/4 colour image, got shape {array.shape}"
        )
    channels = values.shape[2]
    if channels in (3, 4):
        gray = values[:, :, :3] @ np.array([0.299, 0.587, 0.114])
    else:
        gray = values[:, :, 0]
    if channels in (2, 4):
        alpha = values[:, :, -1]
        if alpha.min() < 1.0:
            opaque = alpha > 0.5
            strokes = gray[opaque].mean() if opaque.any() else 0.0
            background = 1.0 if strokes < 0.5 else 0.0
            gray = alpha * gray + (1 - alpha) * background
    return gray


def _featurise(gray: np.ndarray) -> np.ndarray:
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ValueError(f"expected a 2-D image, got shape {gray.shape}")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    low, high = float(gray.min()), float(gray.max())
    if high - low < 1e-6:
        raise ValueError("blank image: there is no contrast between digit and background")
    if np.median(border) > (low + high) / 2:  # light background: make the ink bright
        gray = 1.0 - gray
    background = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
    peak = float(gray.max())
    if peak - background < 1e-6:
        background = float(gray.min())
    ink = np.clip((gray - background) / (peak - background), 0.0, 1.0)
    if ink.shape != (DIGIT_SIDE, DIGIT_SIDE):
        ink = _centre_square(ink)
        ink = np.asarray(
            Image.fromarray(ink.astype(np.float32)).resize(
                (DIGIT_SIDE, DIGIT_SIDE), Image.Resampling.BOX
            ),
            dtype=float,
        )
    top = ink.max()
    if top <= 0:
        raise ValueError("blank image: no ink found")
    return np.clip(ink / top * DIGIT_MAX, 0.0, DIGIT_MAX)


def _centre_square(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink's bounding box and pad it to a square with the ink centred."""
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    if len(rows) == 0 or len(cols) == 0:
        return ink
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    side = max(height, width)
    square = np.zeros((side, side))
    top = (side - height) // 2
    left = (side - width) // 2
    square[top : top + height, left : left + width] = crop
    return square
