"""Detection overhead: ``POST /v1/detect`` per image (real uvicorn) vs a raw ``cv2.dnn`` forward
pass of the same network on the same image, median over interleaved runs. Target: ratio <= 1.15.

The endpoint time is what a client waits for: upload, decoding, the forward pass, boxes, drawing,
JPEG encoding and the answer. It is timed with the raw HTTP client of ``bench/raw_http.py`` (a
request encoded once, as ``bench/serve.py``'s load generator sends them), so it times the
server, not an HTTP library; httpx's time is recorded next to it, for reference. The raw time
is ``blobFromImage`` + ``setInput`` + ``forward`` on a network read with ``cv2.dnn.readNet``
from the same files, in this process. All three run one after the other in each round, so load
from elsewhere on the machine hits them alike.

    python bench/detect.py [--runs 30] [--image ../shared/data/images/fruits.jpg] [--url URL]

Without ``--url`` it starts ``realty serve`` on a free port with a throwaway REALTY_HOME (the
price models are absent there; detection does not need them). Writes bench/results/detect.json.
``bench/serve.py`` imports ``measure_detect`` for the "detect" key of serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
from raw_http import multipart_request, read_response  # bench/raw_http.py, next to this script

from realty.settings import REPO_ROOT, Settings, get_settings
from serving.vision.detection import BLOB_SCALE, BLOB_SIZE, MODEL_FILES

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


async def timed_ms(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return (time.perf_counter() - start) * 1000


def measure_detect(
    url: str,
    runs: int = 30,
    image: Path = DEFAULT_IMAGE,
    model: str = "yolov3-tiny",
    confidence: float = 0.5,
    weights_dir: Path | None = None,
) -> dict:
    """``{"endpoint_ms", "raw_dnn_ms", "ratio", "endpoint_httpx_ms"}``: medians over ``runs``
    interleaved rounds against the serving API at ``url`` (whose weights live in
    ``weights_dir``). ``endpoint_ms`` is timed with the raw HTTP client of ``bench/raw_http.py``
    (as ``bench/serve.py``'s load generator), ``endpoint_httpx_ms`` with httpx, for reference."""
    raw = RawForward(weights_dir or get_settings().yolo_weights_dir, model, image)
    upload = image.read_bytes()
    form = {"model": model, "confidence": str(confidence)}
    request = multipart_request("/v1/detect", form, image.name, upload, "image/jpeg")
    server = urlsplit(url)

    async def rounds() -> dict[str, list[float]]:
        reader, writer = await asyncio.open_connection(server.hostname, server.port)
        httpx_client = httpx.AsyncClient(base_url=url, timeout=120)

        async def detect() -> None:
            writer.write(request)
            status, body = await read_response(reader)
            if status != 200:
                raise RuntimeError(f"/v1/detect answered {status}: {body[:200]!r}")

        async def detect_with_httpx() -> None:
            files = {"file": (image.name, upload, "image/jpeg")}
            response = await httpx_client.post("/v1/detect", files=files, data=form)
            response.raise_for_status()

        async def forward() -> None:
            raw()

        calls = {"endpoint": detect, "raw": forward, "httpx": detect_with_httpx}
        times: dict[str, list[float]] = {name: [] for name in calls}
        try:
            for round_ in range(WARMUP_RUNS + runs):
                for name, call in calls.items():
                    elapsed = await timed_ms(call)
                    if round_ >= WARMUP_RUNS:
                        times[name].append(elapsed)
        finally:
            writer.close()
            await httpx_client.aclose()
        return times

    medians = {name: statistics.median(times) for name, times in asyncio.run(rounds()).items()}
    return {
        "endpoint_ms": round(medians["endpoint"], 2),
        "raw_dnn_ms": round(medians["raw"], 2),
        "ratio": round(medians["endpoint"] / medians["raw"], 3),
        "endpoint_httpx_ms": round(medians["httpx"], 2),
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
        from realty_ops.sandbox import ServingProcess, make_settings

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
