"""Price serving throughput and latency: ``POST /v1/price/predict`` of ``realty serve`` vs
``mlflow models serve`` of the same registered version, one listing per request.

Both servers run at the same time on 127.0.0.1, one worker process each, and get the same load
generator in the same run, interleaved (realty, mlflow, realty, mlflow, ...) at concurrency 1
and 16, so load from elsewhere on the machine hits both alike. The load generator is an asyncio
client on raw keep-alive HTTP/1.1 connections (``bench/raw_http.py``; one per concurrent
client, each sending its next request when the previous answer has arrived).
Every answer must be a 200; the first answers of both servers are checked to be equal prices
(ours with its interval, recorded in the results).

    python bench/serve.py [--seconds 5] [--rounds 2] [--rows 20000] [--iterations 300]

It starts PostgreSQL and MLflow in a temporary home and registers a version trained by the
learning loop's ``train_and_register`` on ``--rows`` real listings (the best candidate wins, as
in the loop). With ``--running`` it uses the stack the ``REALTY_*`` settings point at (``realty
up``) and its ``production`` version instead.
"interval_cost" is what the intervals add to one listing's prediction, timed in process. The
"detect" key comes from ``bench/detect.py`` (``/v1/detect`` vs a raw ``cv2.dnn`` forward).
Writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from mlflow import MlflowClient
from raw_http import json_request, read_response  # bench/raw_http.py, next to this script

from realty.model.intervals import DEFAULT_LEVEL
from realty.model.price_model import client_example
from realty.model.registry import PRODUCTION, load_price_model, version_by_alias
from realty.settings import Settings, get_settings
from realty_ops.sandbox import (
    ServingProcess,
    free_port,
    real_clean_listings,
    register_price_model,
    settings_env,
    temporary_stack,
)
from realty_ops.stack import http_ok
from serving.schemas import Listing

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
CONCURRENCY = (1, 16)
LISTINGS = 200  # distinct listings the requests cycle through


async def client(
    port: int, requests: list[bytes], deadline: float, latencies: list[float], errors: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, body = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(f"{status}: {body[:200]!r}")
            i += 1
    finally:
        writer.close()


def run_load(port: int, requests: list[bytes], concurrency: int, seconds: float) -> dict:
    """Requests/s and latency percentiles of ``concurrency`` clients for ``seconds``."""
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> float:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(
            *(client(port, requests, deadline, latencies, errors) for _ in range(concurrency))
        )
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return {"requests": len(latencies), "seconds": elapsed, "latencies": latencies}


def summarise(runs: list[dict]) -> dict:
    latencies = np.concatenate([run["latencies"] for run in runs]) * 1000
    seconds = sum(run["seconds"] for run in runs)
    return {
        "rps": round(sum(run["requests"] for run in runs) / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies, 99)), 3),
        "requests": int(sum(run["requests"] for run in runs)),
    }


class MlflowScoringServer:
    """``mlflow models serve`` of one registered version, in the local environment."""

    def __init__(self, settings: Settings, version: str) -> None:
        self.port = free_port()
        self.command = [
            str(Path(sys.executable).parent / "mlflow"), "models", "serve",
            "-m", f"models:/{settings.price_model_name}/{version}",
            "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port),
        ]  # fmt: skip
        bin_dir = str(Path(sys.executable).parent)  # it runs `uvicorn` through bash: find ours
        self.env = {**settings_env(settings), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self.log = settings.logs_dir / "mlflow-models-serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MlflowScoringServer:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 300
        while not http_ok(f"http://127.0.0.1:{self.port}/ping"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve did not start; see {self.log}")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def same_prices(realty_url: str, mlflow_port: int, listing: dict) -> tuple[dict, float]:
    """Our first prediction (price and interval) and MLflow's price of ``listing``."""
    ours = httpx.post(f"{realty_url}/v1/price/predict", json={"listings": [listing]}).json()
    theirs = httpx.post(
        f"http://127.0.0.1:{mlflow_port}/invocations", json={"dataframe_records": [listing]}
    ).json()
    return ours["predictions"][0], theirs["predictions"][0]


def interval_cost(settings: Settings, version: str, listings: list[dict]) -> dict:
    """What the intervals add to a one-listing prediction, in this process: per listing the
    fastest of 20 calls of ``predict_rows`` and of ``price_rows`` (the fastest, so the figure
    is the code's cost and not the machine's load), medians over the listings, microseconds."""
    model = load_price_model(settings.price_model_name, version)
    model.price_rows(listings[:1], DEFAULT_LEVEL)  # the level's half-width table

    def fastest(call: Callable[[list[dict]], object], listing: dict) -> float:
        times = []
        for _ in range(20):
            started = time.perf_counter()
            call([listing])
            times.append(time.perf_counter() - started)
        return min(times) * 1e6

    prices = [fastest(model.predict_rows, listing) for listing in listings]
    intervals = [fastest(lambda rows: model.price_rows(rows, DEFAULT_LEVEL), x) for x in listings]
    return {
        "predict_rows_us": round(float(np.median(prices)), 1),
        "price_rows_us": round(float(np.median(intervals)), 1),
    }


def detect_numbers(url: str) -> dict:
    try:
        from detect import measure_detect  # bench/detect.py, next to this script

        return measure_detect(url, runs=20)
    except Exception as error:  # no weights installed, no vision routes: say so in the result
        return {"error": f"{type(error).__name__}: {error}"}


def bench(settings: Settings, version: str, seconds: float, rounds: int) -> dict:
    listings = [
        Listing(**row).fields()
        for row in client_example(real_clean_listings(LISTINGS)).to_dict("records")
    ]
    realty_requests = [json_request("/v1/price/predict", {"listings": [x]}) for x in listings]
    mlflow_requests = [json_request("/invocations", {"dataframe_records": [x]}) for x in listings]
    with ExitStack() as servers:
        realty = servers.enter_context(ServingProcess(settings))
        scoring = servers.enter_context(MlflowScoringServer(settings, version))
        ours, theirs = same_prices(realty.url, scoring.port, listings[0])
        assert abs(ours["price"] - theirs) <= 1e-9 * theirs, (ours, theirs)
        targets = {
            "realty": (realty.port, realty_requests),
            "mlflow": (scoring.port, mlflow_requests),
        }
        for port, requests in targets.values():  # warm both up
            run_load(port, requests, 4, 1.0)
        runs: dict[tuple[str, int], list[dict]] = {}
        for _ in range(rounds):
            for concurrency in CONCURRENCY:
                for name, (port, requests) in targets.items():
                    result = run_load(port, requests, concurrency, seconds)
                    runs.setdefault((name, concurrency), []).append(result)
                    print(f"  {name:<7} c{concurrency:<3} {result['requests']:>6} requests")
        detect = detect_numbers(realty.url)
    report = {name: {f"c{c}": summarise(runs[(name, c)]) for c in CONCURRENCY} for name in targets}
    report["ratio_rps_c16"] = round(
        report["realty"]["c16"]["rps"] / report["mlflow"]["c16"]["rps"], 2
    )
    report["detect"] = detect
    report["interval_cost"] = interval_cost(settings, version, listings)
    report["setup"] = {
        "model": f"{settings.price_model_name} v{version}",
        "candidate": MlflowClient(settings.mlflow_url)
        .get_model_version(settings.price_model_name, version)
        .tags.get("candidate"),
        "seconds_per_phase": seconds,
        "rounds": rounds,
        "workers": 1,
        "listings_per_request": 1,
        "interval": ours["interval"],  # of the first listing: null if the version has none
        "cpus": os.cpu_count(),
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20_000, help="listings to train on")
    parser.add_argument("--iterations", type=int, default=300, help="boosting rounds")
    parser.add_argument("--running", action="store_true", help="bench the running stack")
    args = parser.parse_args()

    if args.running:
        settings = get_settings()
        client = MlflowClient(settings.mlflow_url)
        version = version_by_alias(client, settings.price_model_name, PRODUCTION).version
        report = bench(settings, version, args.seconds, args.rounds)
    else:
        report = bench_in_sandbox(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def bench_in_sandbox(args: argparse.Namespace) -> dict:
    with temporary_stack(("postgres", "mlflow"), prefix="realty-bench-serve-") as settings:
        print(f"training a version on {args.rows:,} real listings ...")
        listings = real_clean_listings(args.rows)
        version = register_price_model(settings, listings, iterations=args.iterations)
        return bench(settings, version, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
