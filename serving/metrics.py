"""Prometheus metrics of one app: requests and latency per route, model version and arm, the
inference log's counters, the model reloads, the rollout and shadow scoring (``GET /metrics``).

Each app has its own ``CollectorRegistry``, so apps built in one process (tests) do not share
counters. The request metrics come from a plain ASGI middleware (cheaper per request than
``BaseHTTPMiddleware``); a route says which model version and arm answered by setting
``request.state.model_version`` and ``model_arm``. Counters that live elsewhere (the
inference log writer, the model slots) are read at scrape time by a custom collector.

With several uvicorn workers a scrape reaches one of them, so ``realty serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` and every worker writes its metrics to files there
(prometheus_client's multiprocess mode); a scrape sums the files of all workers. The values
that are read at scrape time (and the process collector's) exist only in their worker, so a
thread copies them into those files every ``MIRROR_INTERVAL_S`` (``Mirror``); see
docs/monitoring.md#several-workers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Sub-millisecond buckets: a single-listing price prediction takes about a millisecond.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
disable_created_metrics()  # no *_created series: nobody graphs when a label set first appeared
UNMATCHED = "unmatched"  # the route label of paths no route serves (bounded label values)
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
MIRROR_INTERVAL_S = 1.0
# How the workers' copies of a gauge combine (the others add up): one loaded version is 1,
# not the number of workers that loaded it.
GAUGE_MODES = {
    "realty_model_loaded": "livemax",
    "realty_rollout_share": "livemax",
    "process_max_fds": "livemax",
    "process_start_time_seconds": "livemin",
}


class ServingMetrics:
    """The app's metrics; ``multiprocess_dir`` (default: ``$PROMETHEUS_MULTIPROC_DIR``) is
    the directory the workers of one server share, None for a single process."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_DIR_ENV)
        self.registry = CollectorRegistry()
        # In multiprocess mode the request metrics live in the shared files, not in a registry.
        own = None if self.multiprocess_dir else self.registry
        if self.multiprocess_dir:
            multiprocess.MultiProcessCollector(self.registry, path=self.multiprocess_dir)
        self.mirror = Mirror() if self.multiprocess_dir else None
        # The process's resident memory, CPU seconds and open fds (process_*).
        self.add_collector(ProcessCollector(registry=None).collect)
        self.requests = Counter(
            "realty_requests",
            "HTTP requests answered, by route, method, status, model version and arm",
            ["route", "method", "status", "model_version", "arm"],
            registry=own,
        )
        self.latency = Histogram(
            "realty_request_seconds",
            "Request latency in seconds, by route, model version and arm",
            ["route", "model_version", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._stop = threading.Event()
        self._mirroring: threading.Thread | None = None

    def observe(
        self, route: str, method: str, status: int, version: str, arm: str, seconds: float
    ) -> None:
        self.requests.labels(route, method, str(status), version, arm).inc()
        self.latency.labels(route, version, arm).observe(seconds)

    def add_collector(self, collect: Callable[[], Iterator[Any]]) -> None:
        if self.mirror:
            self.mirror.sources.append(collect)
        else:
            self.registry.register(_FunctionCollector(collect))

    def refresh(self) -> None:
        """Copy this worker's scrape-time values into the shared files (multiprocess mode)."""
        if self.mirror:
            self.mirror.refresh()

    def start(self) -> None:
        """In multiprocess mode, mirror this worker's values every ``MIRROR_INTERVAL_S``, so a
        scrape answered by another worker sees them."""
        if self.mirror and self._mirroring is None:
            self._mirroring = threading.Thread(
                target=self._mirror_until_stopped, name="metrics-mirror", daemon=True
            )
            self._mirroring.start()

    def stop(self) -> None:
        """Stop mirroring and drop this worker's live gauges (its counters keep counting)."""
        self._stop.set()
        if self._mirroring:
            self._mirroring.join()
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)

    def _mirror_until_stopped(self) -> None:
        while not self._stop.wait(MIRROR_INTERVAL_S):
            self.refresh()


class Mirror:
    """Writes the families of ``sources`` into multiprocess metrics: a counter grows by what its
    source grew since the last refresh; a gauge takes its source's value, and a label set its
    source stopped reporting (a version no longer loaded) goes back to 0."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterator[Any]]] = []
        self._metrics: dict[str, Counter | Gauge] = {}
        self._values: dict[tuple[str, tuple[str, ...]], float] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            seen: set[tuple[str, tuple[str, ...]]] = set()
            for source in self.sources:
                for family in source():
                    seen |= self._write(family)
            for name, labels in self._values.keys() - seen:
                metric = self._metrics[name]
                if isinstance(metric, Gauge):
                    self._set(metric, name, labels, 0.0)

    def _write(self, family: Any) -> set[tuple[str, tuple[str, ...]]]:
        seen = set()
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith("_total"):
                continue  # a *_created sample
            labels = tuple(sample.labels[n] for n in sorted(sample.labels))
            metric = self._metric(family, sorted(sample.labels))
            if isinstance(metric, Counter):
                grown = sample.value - self._values.get((family.name, labels), 0.0)
                if grown > 0:
                    (metric.labels(*labels) if labels else metric).inc(grown)
                self._values[(family.name, labels)] = sample.value
            else:
                self._set(metric, family.name, labels, sample.value)
            seen.add((family.name, labels))
        return seen

    def _set(self, gauge: Gauge, name: str, labels: tuple[str, ...], value: float) -> None:
        (gauge.labels(*labels) if labels else gauge).set(value)
        self._values[(name, labels)] = value

    def _metric(self, family: Any, labelnames: list[str]) -> Counter | Gauge:
        if family.name not in self._metrics:
            if family.type == "counter":
                metric: Counter | Gauge = Counter(
                    family.name, family.documentation, labelnames, registry=None
                )
            else:
                mode = GAUGE_MODES.get(family.name, "livesum")
                metric = Gauge(
                    family.name,
                    family.documentation,
                    labelnames,
                    registry=None,
                    multiprocess_mode=mode,
                )
            self._metrics[family.name] = metric
        return self._metrics[family.name]


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
