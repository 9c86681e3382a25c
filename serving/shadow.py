"""Shadow scoring: a model scores inputs the client was already answered for (listings to
price, digits to read), off the response path, and its answers go to the inference log as role
``shadow`` with the request id and item of the answered row, so the two always join.

``submit`` never waits: jobs go to a bounded queue that one daemon thread drains; when it is
full the job is dropped and counted (``/metrics``), never delayed into the response. The thread
calls the model directly (not the batcher: that lives on the event loop), one job at a time.
A job says how its model scores (``price_answers``, ``digit_answers``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.deps import record
from serving.inference_log import InferenceLogWriter
from serving.model_holder import LoadedModel

SHADOW = "shadow"

log = logging.getLogger(__name__)


# (prediction, details) per input: a price, or a class in details like the answered rows.
Answers = list[tuple[float | None, dict | None]]


def price_answers(model: Any, listings: list[dict], level: float) -> Answers:
    return [(price, None) for price in model.price_rows(listings, level).price.tolist()]


def digit_answers(model: Any, features: list[np.ndarray], level: float) -> Answers:
    return [(None, {"prediction": int(digit)}) for digit in model.predict(np.vstack(features))]


@dataclass(frozen=True)
class ShadowJob:
    loaded: LoadedModel
    request_id: str
    route: str
    items: list[int]
    inputs: list  # the items' inputs, in order
    score: Callable[[Any, list, float], Answers] = price_answers
    logged_inputs: bool = True  # listings go into the log; images never do


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
            answers = job.score(job.loaded.model, job.inputs, self.level)
            failed = False
        except Exception as failure:  # the challenger's failure is a figure, not an outage
            log.warning("shadow v%s failed: %s", job.loaded.version, failure)
            answers, failed = [(None, {"error": str(failure)[:500]})] * len(job.items), True
        latency_ms = (time.perf_counter() - started) * 1000
        logged = job.inputs if job.logged_inputs else [None] * len(job.items)
        shadowed = zip(job.items, logged, answers, strict=True)
        self.inference_log.submit(
            [
                record(job.request_id, job.route, job.loaded, latency_ms, item, listing,
                       prediction, details, role=SHADOW)
                for item, listing, (prediction, details) in shadowed
            ]
        )  # fmt: skip
        self.counts["failed" if failed else "scored"] += len(job.items)
