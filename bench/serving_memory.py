"""Memory of one serving process with its production models loaded, for the Kubernetes requests
and limits (deploy/k8s/serving.yaml): resident set size after start, and its peak while
answering price requests, sampled every 50 ms.

    python bench/serving_memory.py [--requests 2000] [--rows 20000]

It starts PostgreSQL and MLflow in a temporary home, registers a price version trained on
``--rows`` real listings and the digits model (realty_ops.sandbox, as the serving tests do), runs
``realty serve`` (one worker) and sends single-listing requests from a few threads.
Writes bench/results/serving_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from realty.model.price_model import client_example
from realty_ops.memory import RssSampler
from realty_ops.sandbox import (
    ServingProcess,
    real_clean_listings,
    register_digits_model,
    register_price_model,
    temporary_stack,
)

RESULTS = Path(__file__).resolve().parent / "results" / "serving_memory.json"


def measure(url: str, pid: int, listings: list[dict], requests: int) -> dict:
    def send(i: int) -> None:
        body = {"listings": [listings[i % len(listings)]]}
        httpx.post(f"{url}/v1/price/predict", json=body, timeout=30).raise_for_status()

    with RssSampler(pid, interval_s=0.05) as sampler, ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(requests)))
    return {
        "rss_after_start_mb": round(sampler.start_mb, 1),
        "rss_peak_mb": round(sampler.peak_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=20_000, help="listings to train on")
    args = parser.parse_args()

    with temporary_stack(("postgres", "mlflow"), prefix="realty-bench-memory-") as settings:
        clean = real_clean_listings(args.rows)
        version = register_price_model(settings, clean, iterations=300)
        register_digits_model(settings)
        listings = client_example(clean.head(200)).to_dict("records")
        with ServingProcess(settings) as serving:
            report = measure(serving.url, serving.process.pid, listings, args.requests)
    report["setup"] = {
        "model": f"{settings.price_model_name} v{version} + digits",
        "requests": args.requests,
        "workers": 1,
        "cpus": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
