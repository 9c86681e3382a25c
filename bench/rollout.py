"""A staged rollout on real servers: the canary's share of traffic, what shadow scoring costs
production's latency, and how fast a bad challenger is rolled back, with every request a 200.

    python bench/rollout.py [--seconds 10] [--rounds 3] [--listings 10000] [--rows 5000]

In a temporary home it starts PostgreSQL and MLflow, trains a champion on ``--rows`` real
listings (the loop's ``train_and_register``), registers a twin of it (same model, another
version) and a bad challenger (trained on doubled prices), and starts ``realty serve`` with the
default alias poll (10 s). Then:

1. shadow overhead: one client, one listing per request, ``--rounds`` x (rollout off for
   ``--seconds``, the twin in shadow for ``--seconds``); production's p99 with shadow on minus
   off, over the same run;
2. canary share: the twin on canary 5%, ``--listings`` distinct listings, one per request, four
   clients; the share the canary answered;
3. rollback: the bad challenger straight onto canary 5% under two clients' load; the rollout
   controller (``realty.model.guardrails.control``, what ``rollout_sensor`` runs) ticks every
   ``REALTY_ROLLOUT_CONTROLLER_INTERVAL_S`` (10 s); seconds from its canary step to its
   rollback.

Writes bench/results/rollout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import numpy as np
from mlflow import MlflowClient
from raw_http import json_request, read_response  # bench/raw_http.py, next to this script

from realty.model import guardrails, rollout
from realty.settings import Settings
from realty_ops.sandbox import (
    ServingProcess,
    copy_version,
    real_clean_listings,
    register_price_model,
    temporary_stack,
)
from serving.schemas import EXAMPLE_LISTING

RESULTS = Path(__file__).resolve().parent / "results" / "rollout.json"
PATH = "/v1/price/predict"
CANARY_SHARE = 0.05


class Load:
    """Clients on raw keep-alive connections, each sending its next request when the previous
    answer is in; records latencies, the arm of every answer and every failure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.arms: list[str] = []
        self.failures: list[str] = []
        self.sent = 0

    async def _client(self, requests: list[bytes], stop) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            while (request := stop()) is None or request:
                started = time.perf_counter()
                writer.write(requests[self.sent % len(requests)] if request is None else request)
                self.sent += 1
                status, body = await read_response(reader)
                self.latencies.append(time.perf_counter() - started)
                if status != 200:
                    self.failures.append(f"{status}: {body[:200]!r}")
                else:
                    self.arms.append(json.loads(body)["predictions"][0]["arm"])
        finally:
            writer.close()

    def run(self, requests: list[bytes], clients: int, stop) -> None:
        async def main() -> None:
            await asyncio.gather(*(self._client(requests, stop) for _ in range(clients)))

        asyncio.run(main())

    def for_seconds(self, requests: list[bytes], seconds: float, clients: int = 1) -> None:
        deadline = time.perf_counter() + seconds
        self.run(requests, clients, lambda: None if time.perf_counter() < deadline else b"")

    def each_once(self, requests: list[bytes], clients: int) -> None:
        queue = list(reversed(requests))
        self.run(requests, clients, lambda: queue.pop() if queue else b"")


def single_listing_requests(count: int) -> list[bytes]:
    return [
        json_request(PATH, {"listings": [{**EXAMPLE_LISTING, "street": 2_000_000 + i}]})
        for i in range(count)
    ]


class Bench:
    def __init__(self, settings: Settings, serving: ServingProcess) -> None:
        self.settings, self.serving = settings, serving
        self.client = MlflowClient(settings.mlflow_url)
        self.name = settings.price_model_name
        self.failures: list[str] = []
        self.requests = 0

    def move(self, change, action: str) -> rollout.RolloutEvent:
        return rollout.move(
            self.settings, self.client, self.name, change, action, "bench", f"bench: {action}"
        )

    def serving_follows(self, stage: str | None) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            models = httpx.get(f"{self.serving.url}/v1/models").json()["models"]
            seen = next(m for m in models if m["name"] == self.name)["rollout"]
            if (seen is None and stage is None) or (
                seen and seen["stage"] == stage and seen["loaded"]
            ):
                return
            time.sleep(0.2)
        raise TimeoutError(f"serving did not follow the rollout to {stage}")

    def load(self) -> Load:
        return Load(self.serving.port)

    def count(self, load: Load) -> Load:
        self.failures += load.failures
        self.requests += load.sent
        return load

    def shadow_overhead(self, twin: str, seconds: float, rounds: int) -> dict:
        requests = single_listing_requests(200)
        off, on = [], []
        for _ in range(rounds):
            off += self.count(self._timed(requests, seconds)).latencies
            self.move(partial(rollout.started, version=twin), "start")
            self.serving_follows("shadow")
            on += self.count(self._timed(requests, seconds)).latencies
            self.move(rollout.aborted, "rollback")
            self.serving_follows(None)
        p99_off, p99_on = (float(np.percentile(np.array(x) * 1000, 99)) for x in (off, on))
        return {"p99_off_ms": round(p99_off, 3), "p99_on_ms": round(p99_on, 3),
                "shadow_p99_overhead_ms": round(p99_on - p99_off, 3)}  # fmt: skip

    def _timed(self, requests: list[bytes], seconds: float) -> Load:
        load = self.load()
        load.for_seconds(requests, seconds)
        return load

    def canary_share(self, twin: str, listings: int) -> float:
        self.move(partial(rollout.started, version=twin), "start")
        self.move(partial(rollout.stepped, share=CANARY_SHARE), "step")
        self.serving_follows("canary")
        load = self.count(self.load())
        load.each_once(single_listing_requests(listings), clients=4)
        self.move(rollout.aborted, "rollback")
        self.serving_follows(None)
        return load.arms.count("canary") / len(load.arms)

    def rollback_seconds(self, bad: str) -> float:
        self.move(partial(rollout.started, version=bad), "start")
        entered = time.monotonic()
        self.move(partial(rollout.stepped, share=CANARY_SHARE), "step")
        load, stop = self.load(), threading.Event()
        background = threading.Thread(
            target=load.run,
            args=(single_listing_requests(5_000), 2, lambda: b"" if stop.is_set() else None),
        )
        background.start()
        try:
            while rollout.read_state(self.client, self.name).challenger is not None:
                time.sleep(self.settings.rollout_controller_interval_s)
                said = guardrails.control(self.settings, self.client, datetime.now(UTC))
                print("  controller:", said)
            seconds = time.monotonic() - entered
            time.sleep(self.settings.serving_poll_interval_s + 1)  # serving follows, under load
        finally:
            stop.set()
            background.join()
        self.count(load)
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per overhead phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--listings", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=5_000, help="listings to train on")
    parser.add_argument("--iterations", type=int, default=100, help="boosting rounds")
    args = parser.parse_args()
    with temporary_stack(("postgres", "mlflow"), prefix="realty-bench-rollout-") as settings:
        print(f"training a champion and a bad challenger on {args.rows:,} real listings ...")
        listings = real_clean_listings(args.rows)
        champion = register_price_model(settings, listings, iterations=args.iterations)
        doubled = listings.assign(price=listings["price"] * 2)
        bad = register_price_model(settings, doubled, iterations=args.iterations, promote=False)
        twin = copy_version(MlflowClient(settings.mlflow_url), settings.price_model_name,
                            settings.price_model_name, champion)  # fmt: skip
        with ServingProcess(settings) as serving:
            bench = Bench(settings, serving)
            print("shadow overhead ...")
            overhead = bench.shadow_overhead(twin, args.seconds, args.rounds)
            print("canary share ...")
            share = bench.canary_share(twin, args.listings)
            print("rollback of a challenger that doubles every price ...")
            seconds = bench.rollback_seconds(bad)
    report = {
        "canary_share": round(share, 4),
        "canary_target": CANARY_SHARE,
        "failed_requests": len(bench.failures),
        **overhead,
        "rollback_seconds": round(seconds, 1),
        "requests": bench.requests,
        "targets": {
            "canary_share": "0.05 ± 0.007",
            "shadow_p99_overhead_ms": "<= 1",
            "rollback_seconds": "<= 60",
            "failed_requests": 0,
        },
    }
    if bench.failures:
        report["failure_example"] = bench.failures[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
