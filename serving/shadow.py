"""Shadow scoring: a model prices listings the client was already answered for, off the
response path, and the prices go to the inference log as role ``shadow`` with the request id
and item of the answered row, so the two always join.

``submit`` never waits: jobs go to a bounded queue that one daemon thread drains; when it is
full the job is dropped and counted (``/metrics``), never delayed into the response. The thread
calls the model directly (not the batcher: that lives on the event loop), one job at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

from serving.deps import record
from serving.inference_log import InferenceLogWriter
from serving.model_holder import LoadedModel

SHADOW = "shadow"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowJob:
    loaded: LoadedModel
    request_id: str
    route: str
    items: list[int]
    listings: list[dict]  # the items' listings, in order


class ShadowScorer:
    def __init__(self, inference_log: InferenceLogWriter, level: float, queue_jobs: int) -> None:
        self.inference_log = inference_log
        self.level = level
        self._jobs: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=queue_jobs)
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self.counts: Counter[str] = Counter(dict.fromkeys(("scored", "failed", "dropped"), 0))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Score what is queued, then stop (what is left after ``timeout`` is dropped)."""
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def submit(self, job: ShadowJob) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.counts["dropped"] += len(job.items)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._score(job)

    def _score(self, job: ShadowJob) -> None:
        started = time.perf_counter()
        try:
            priced = job.loaded.model.price_rows(job.listings, self.level)
            prices = priced.price.tolist()
            error = None
        except Exception as failure:  # the challenger's failure is a figure, not an outage
            log.warning("shadow v%s failed: %s", job.loaded.version, failure)
            prices, error = [None] * len(job.items), {"error": str(failure)[:500]}
        latency_ms = (time.perf_counter() - started) * 1000
        shadowed = zip(job.items, job.listings, prices, strict=True)
        self.inference_log.submit(
            [
                record(job.request_id, job.route, job.loaded, latency_ms, item, listing, price,
                       error, role=SHADOW)
                for item, listing, price in shadowed
            ]
        )  # fmt: skip
        self.counts["failed" if error else "scored"] += len(job.items)
