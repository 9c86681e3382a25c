"""Inference-log benchmark: what ``submit`` costs a request, and how fast rows reach the table.

On a dedicated embedded PostgreSQL server, with the default batch size and flush interval:

- queue path: ``--records`` single-listing records submitted one per call from ``--threads``
  threads as fast as they can (the buffer is made large enough that nothing spills); the cost of
  each ``submit`` call (p50/p99) and the writer's throughput until ``close()`` returns;
- spool path: the same calls with a one-row buffer, so every call appends to the spool file
  (what a request pays while the database is away or the buffer is full);
- replay: a new writer replaying that spool into the table.

Writes ``bench/results/inference_log.json``.

    python bench/inference_log.py [--records 100000] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "inference_log.json"
LISTING = {
    "brokered_by": 101640.0, "status": "for_sale", "bed": 3, "bath": 2, "acre_lot": 0.12,
    "street": 1962661.0, "city": "Adjuntas", "state": "Puerto Rico", "zip_code": "00601",
    "house_size": 920.0, "prev_sold_date": None,
}  # fmt: skip


def record(prefix: str, number: int):
    from serving.inference_log import InferenceRecord

    return InferenceRecord(
        request_id=f"{prefix}-{number}",
        item=0,
        logged_at=datetime.now(UTC),
        route="/v1/price/predict",
        model_name="realty-price",
        model_version="1",
        latency_ms=1.0,
        listing=LISTING,
        prediction=105_000.0,
        details=None,
    )


def submit_from_threads(writer, prefix: str, records: int, threads: int) -> list[float]:
    """Submit ``records`` one per call from ``threads`` threads; the calls' durations (µs)."""
    per_thread = records // threads
    durations: list[list[float]] = [[] for _ in range(threads)]

    def client(number: int) -> None:
        timings = durations[number]
        for index in range(per_thread):
            batch = [record(f"{prefix}-{number}", index)]
            start = time.perf_counter_ns()
            writer.submit(batch)
            timings.append((time.perf_counter_ns() - start) / 1000)

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [duration for timings in durations for duration in timings]


def percentiles(durations_us: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(durations_us, n=100)
    return {"p50_us": round(cuts[49], 1), "p99_us": round(cuts[98], 1)}


def stored_rows(settings, prefix: str) -> int:
    from realty.store.db import connect

    with connect("raw_data", settings) as conn:
        query = "SELECT count(*) FROM inference_log WHERE request_id LIKE %s"
        return conn.execute(query, (f"{prefix}-%",)).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    from realty_ops.sandbox import temporary_stack
    from serving.inference_log import InferenceLogWriter

    with temporary_stack(prefix="realty-bench-inference-log-") as settings:
        queued = settings.model_copy(update={"inference_log_queue_rows": args.records + 1})
        writer = InferenceLogWriter(queued)
        writer.start()
        start = time.perf_counter()
        queue_calls = submit_from_threads(writer, "queue", args.records, args.threads)
        writer.close(timeout=600)
        write_s = time.perf_counter() - start
        queue_stats = writer.stats()

        spilling = settings.model_copy(update={"inference_log_queue_rows": 1})
        writer = InferenceLogWriter(spilling)  # not started: every call but the first spools
        spool_calls = submit_from_threads(writer, "spool", args.records, args.threads)
        writer.close()

        replayer = InferenceLogWriter(settings)
        start = time.perf_counter()
        replayer.start()
        replayer.close(timeout=600)
        replay_s = time.perf_counter() - start

        stored = {prefix: stored_rows(settings, prefix) for prefix in ("queue", "spool")}

    submitted = args.threads * (args.records // args.threads)
    result = {
        "records": submitted,
        "threads": args.threads,
        "batch_rows": settings.inference_log_batch_rows,
        "queue_submit": percentiles(queue_calls),
        "queue_rows_per_s": round(submitted / write_s),
        "queue_seconds": round(write_s, 3),
        "queue_rows_spooled": queue_stats["rows_spooled"],
        "spool_submit": percentiles(spool_calls),
        "replay_rows_per_s": round(submitted / replay_s),
        "replay_seconds": round(replay_s, 3),
        "stored": stored,
        "all_stored": all(count == submitted for count in stored.values()),
        "cores": len(os.sched_getaffinity(0)),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
