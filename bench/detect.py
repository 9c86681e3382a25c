"""Detection overhead: ``POST /v1/detect`` per image (real uvicorn) vs a raw ``cv2.dnn`` forward
pass of the same network on the same image, median over interleaved runs. Target: ratio <= 1.15.

The endpoint time is what a client waits for: upload, decoding, the forward pass, boxes, drawing,
JPEG encoding and the answer. The raw time is ``blobFromImage`` + ``setInput`` + ``forward`` on
a network read with ``cv2.dnn.readNet`` from the same files, in this process. Both run one after
the other in each round, so load from elsewhere on the machine hits both alike.

    python bench/detect.py [--runs 30] [--image ../shared/data/images/fruits.jpg] [--url URL]

Without ``--url`` it starts ``realty serve`` on a free port with a throwaway REALTY_HOME (the
price models are absent there; detection does not need them). Writes bench/results/detect.json.
``bench/serve.py`` imports ``measure_detect`` for the "detect" key of serve.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import httpx

from realty.settings import REPO_ROOT, Settings, get_settings
from serving.vision import BLOB_SCALE, BLOB_SIZE, MODEL_FILES

RESULTS = Path(__file__).resolve().parent / "results" / "detect.json"
DEFAULT_IMAGE = REPO_ROOT.parent / "shared" / "data" / "images" / "fruits.jpg"
WARMUP_RUNS = 3


class RawForward:
    """The same network as the service's, called directly through cv2.dnn."""

    def __init__(self, weights_dir: Path, model: str, image: Path) -> None:
        weights, config = (str(weights_dir / name) for name in MODEL_FILES[model])
        self.net = cv2.dnn.readNet(weights, config)
        names = self.net.getLayerNames()
        self.outputs = [names[i - 1] for i in self.net.getUnconnectedOutLayers()]
        self.image = cv2.imread(str(image))

    def __call__(self) -> None:
        blob = cv2.dnn.blobFromImage(self.image, BLOB_SCALE, BLOB_SIZE, (0, 0, 0), True, crop=False)
        self.net.setInput(blob)
        self.net.forward(self.outputs)


def timed_ms(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def measure_detect(
    url: str,
    runs: int = 30,
    image: Path = DEFAULT_IMAGE,
    model: str = "yolov3-tiny",
    confidence: float = 0.5,
    weights_dir: Path | None = None,
) -> dict:
    """``{"endpoint_ms", "raw_dnn_ms", "ratio"}``: medians over ``runs`` interleaved rounds
    against the serving API at ``url`` (whose weights live in ``weights_dir``)."""
    raw = RawForward(weights_dir or get_settings().yolo_weights_dir, model, image)
    upload = image.read_bytes()
    form = {"model": model, "confidence": str(confidence)}

    with httpx.Client(base_url=url, timeout=120) as client:

        def detect() -> None:
            files = {"file": (image.name, upload, "image/jpeg")}
            client.post("/v1/detect", files=files, data=form).raise_for_status()

        for _ in range(WARMUP_RUNS):
            detect()
            raw()
        endpoint, direct = [], []
        for _ in range(runs):
            endpoint.append(timed_ms(detect))
            direct.append(timed_ms(raw))
    endpoint_ms, raw_ms = statistics.median(endpoint), statistics.median(direct)
    return {
        "endpoint_ms": round(endpoint_ms, 2),
        "raw_dnn_ms": round(raw_ms, 2),
        "ratio": round(endpoint_ms / raw_ms, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--url", help="a running serving API (default: start one)")
    args = parser.parse_args()

    if args.url:
        result = measure_detect(args.url, args.runs, args.image)
    else:
        from realty.sandbox import make_settings
        from serving.sandbox import ServingProcess

        with tempfile.TemporaryDirectory(prefix="realty-bench-detect-") as home:
            settings: Settings = make_settings(Path(home))
            with ServingProcess(settings) as server:
                result = measure_detect(server.url, args.runs, args.image)
    report = {**result, "image": args.image.name, "runs": args.runs, "model": "yolov3-tiny"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
