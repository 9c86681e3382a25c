"""Prometheus metrics of one app: requests and latency per route, model version and arm, the
inference log's counters, the model reloads, the rollout and shadow scoring (``GET /metrics``).

Each app has its own ``CollectorRegistry``, so apps built in one process (tests) do not share
counters. The request metrics come from a plain ASGI middleware (cheaper per request than
``BaseHTTPMiddleware``); a route says which model version and arm answered by setting
``request.state.model_version`` and ``model_arm``. Counters that live elsewhere (the
inference log writer, the model slots) are read at scrape time by a custom collector.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Sub-millisecond buckets: a single-listing price prediction takes about a millisecond.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
disable_created_metrics()  # no *_created series: nobody graphs when a label set first appeared
UNMATCHED = "unmatched"  # the route label of paths no route serves (bounded label values)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The process's resident memory, CPU seconds and open fds (process_*).
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "realty_requests",
            "HTTP requests answered, by route, method, status, model version and arm",
            ["route", "method", "status", "model_version", "arm"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "realty_request_seconds",
            "Request latency in seconds, by route, model version and arm",
            ["route", "model_version", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(
        self, route: str, method: str, status: int, version: str, arm: str, seconds: float
    ) -> None:
        self.requests.labels(route, method, str(status), version, arm).inc()
        self.latency.labels(route, version, arm).observe(seconds)

    def add_collector(self, collect: Callable[[], Iterator[Any]]) -> None:
        self.registry.register(_FunctionCollector(collect))


class _FunctionCollector(Collector):
    def __init__(self, collect: Callable[[], Iterator[Any]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Any]:
        yield from self._collect()


def inference_log_families(stats: dict[str, int]) -> Iterator[Any]:
    """The inference log writer's ``stats()`` as metrics."""
    yield GaugeMetricFamily(
        "realty_inference_log_queue_depth",
        "Inference records in memory, waiting for the writer",
        value=stats.get("queue_depth", 0),
    )
    for name in ("rows_written", "rows_spooled", "rows_replayed", "rows_dropped"):
        yield CounterMetricFamily(
            f"realty_inference_log_{name}",
            f"Inference log rows {name.removeprefix('rows_')}",
            value=stats.get(name, 0),
        )


def reload_families(reloads: dict[str, dict[str, int]], loaded: dict[str, str]) -> Iterator[Any]:
    """Reloads per model and outcome; the loaded version of each model (value 1)."""
    counter = CounterMetricFamily(
        "realty_model_reloads", "Model versions loaded or refused", labels=["model", "outcome"]
    )
    for model, outcomes in reloads.items():
        for outcome, count in outcomes.items():
            counter.add_metric([model, outcome], count)
    yield counter
    gauge = GaugeMetricFamily(
        "realty_model_loaded", "The version each model serves (1)", labels=["model", "version"]
    )
    for model, version in loaded.items():
        gauge.add_metric([model, version], 1)
    yield gauge


def rollout_families(arms: dict[str, Any]) -> Iterator[Any]:
    """Each model's challenger in rollout: its version, stage and canary share."""
    gauge = GaugeMetricFamily(
        "realty_rollout_share",
        "The challenger's share of traffic (0 in shadow), by model, version and stage",
        labels=["model", "version", "stage"],
    )
    for model, arm in arms.items():
        if arm is not None:
            gauge.add_metric([model, arm.challenger.version, arm.stage], arm.share)
    yield gauge


def shadow_families(counts: dict[str, int]) -> Iterator[Any]:
    """Listings scored unseen by the shadow scorer, failed there, or dropped (queue full)."""
    for name in ("scored", "failed", "dropped"):
        yield CounterMetricFamily(
            f"realty_shadow_{name}", f"Listings the shadow scorer {name}", value=counts[name]
        )


def batch_families(requests: int, batches: int) -> Iterator[Any]:
    """Price requests and the model calls that answered them (micro-batching)."""
    yield CounterMetricFamily(
        "realty_price_batched_requests", "Price requests answered by batched calls", value=requests
    )
    yield CounterMetricFamily(
        "realty_price_model_calls", "Batched price model calls", value=batches
    )


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template and model version."""

    def __init__(self, app: Any, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            state = scope.get("state", {})
            self.metrics.observe(
                getattr(route, "path", UNMATCHED),
                scope["method"],
                status,
                state.get("model_version", ""),
                state.get("model_arm", "production" if "model_version" in state else ""),
                time.perf_counter() - started,
            )
