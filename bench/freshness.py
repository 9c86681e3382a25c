"""Freshness benchmark: seconds from a drift-worthy batch becoming available at the data API to
the new production version being set, through the real automation.

The embedded stack runs as `make demo` runs it (PostgreSQL, MLflow, the simulator, the Dagster
webserver and daemon; sensors tick, the daemon launches the runs). The simulator's generator
serves 50,000-row batches whose states move from batch to batch, as the real source's do:

1. batch 1 flows through the loop and becomes production v1 (initial baseline); while it does,
   the simulator is told to fail every /data call, so batch 2 is not available yet;
2. once v1 is production and its run is over, the faults are lifted: batch 2 is available (t0);
3. the clock stops when MLflow's alias ``production`` points at the version trained on it.

The breakdown comes from the records the platform keeps (RAW's fetch time, Dagster's runs and
steps). Writes ``bench/results/freshness.json``.

    python bench/freshness.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results" / "freshness.json"
SERVICES = ("postgres", "mlflow", "source", "dagster-webserver", "dagster-daemon")
TIMEOUT_S = 900


def _environment(settings, rows: int) -> None:
    """What the stack's children read: this run's home, ports and simulator size."""
    os.environ.update(
        {
            "REALTY_HOME": str(settings.home),
            "REALTY_PG_PORT": str(settings.pg_port),
            "REALTY_MLFLOW_PORT": str(settings.mlflow_port),
            "REALTY_DAGSTER_PORT": str(settings.dagster_port),
            "REALTY_SOURCE_PORT": str(settings.source_port),
            "REALTY_SOURCE_ROWS_PER_BATCH": str(rows),
            "REALTY_SOURCE_BATCHES": "10",
            "REALTY_SENSOR_INTERVAL_S": "1",
        }
    )


def _wait(what: str, condition, timeout_s: float = TIMEOUT_S, every_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f} s")


def _landed(settings) -> list[tuple[str, float]]:
    from realty.store.db import connect

    with connect("raw_data", settings) as conn:
        rows = conn.execute("SELECT batch_key, fetched_at FROM raw_batches ORDER BY seq")
        return [(key, fetched.timestamp()) for key, fetched in rows]


def _faults(settings, **faults: int) -> None:
    httpx.post(f"{settings.simulator_url}/admin/faults", json=faults, timeout=10).raise_for_status()


def _production(client, name: str) -> str | None:
    from realty.model.registry import PRODUCTION, version_by_alias

    version = version_by_alias(client, name, PRODUCTION)
    return version.version if version else None


def _run(instance, job_name: str, key: str):
    from dagster import RunsFilter

    records = instance.get_run_records(
        RunsFilter(job_name=job_name, tags={"dagster/partition": key}), limit=1
    )
    return records[0] if records else None


def _finished(instance, job_name: str, key: str) -> bool:
    record = _run(instance, job_name, key)
    return record is not None and record.dagster_run.is_finished


def _steps(instance, run_id: str) -> dict[str, tuple[float, float]]:
    return {
        stats.step_key: (stats.start_time, stats.end_time)
        for stats in instance.get_run_step_stats(run_id)
    }


def _run_events(instance, run_id: str) -> dict[str, float]:
    """When the daemon handed the run to the launcher, and when it began executing."""
    from dagster import DagsterEventType

    kinds = {DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START}
    return {
        entry.dagster_event.event_type_value: entry.timestamp
        for entry in instance.all_logs(run_id, of_type=kinds)
    }


def breakdown(instance, settings, key: str, t0: float, t_production: float) -> dict[str, float]:
    """Where the seconds went, from the platform's own records (each phase ends where the next
    begins, so they add up to the total). One run carries the batch from RAW to the gate."""
    fetched = dict(_landed(settings))[key]
    ingest = _run(instance, "ingest_batch", key)
    steps = _steps(instance, ingest.dagster_run.run_id)
    events = _run_events(instance, ingest.dagster_run.run_id)
    marks = [
        ("wait for the source sensor and fetch", t0),
        ("land in RAW, partition, request the ingest run", fetched),
        ("queued until the daemon launches it", ingest.create_timestamp.timestamp()),
        ("launch: a process that loads the code location", events.get("PIPELINE_STARTING")),
        ("run start to its first step", events.get("PIPELINE_START")),
        ("raw_batch", steps["raw_batch"][0]),
        ("clean_batch", steps["clean_batch"][0]),
        ("drift_report", steps["drift_report"][0]),
        ("candidate_model (train, log, register)", steps["candidate_model"][0]),
        ("production_model (gate, alias)", steps["production_model"][0]),
    ]
    marks = [(name, at) for name, at in marks if at is not None]  # events a run did not log
    ends = [at for _, at in marks[1:]] + [t_production]
    return {name: round(end - start, 2) for (name, start), end in zip(marks, ends, strict=True)}


def training_breakdown(client, name: str, version: str) -> dict:
    """Where candidate_model's seconds went, from the MLflow runs it logged: fitting and scoring
    the candidates vs logging them, and each candidate's own seconds."""
    run = client.get_run(client.get_model_version(name, version).run_id)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    metrics = parent.data.metrics
    return {
        "candidates_seconds": round(metrics["candidates_seconds"], 2),
        "logging_seconds": round(metrics["logging_seconds"], 2),
        "per_candidate": {
            child.data.tags["candidate"]: {
                "train_seconds": round(child.data.metrics["train_seconds"], 2),
                "evaluate_seconds": round(child.data.metrics["evaluate_seconds"], 2),
            }
            for child in children
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()

    from realty_ops.sandbox import make_settings

    settings = make_settings(Path(tempfile.mkdtemp(prefix="realty-freshness-")) / "home")
    _environment(settings, args.rows)

    from dagster import DagsterInstance
    from mlflow import MlflowClient

    from realty.settings import Settings
    from realty.store.db import connect
    from realty.store.ledger import batch_history
    from realty_ops.stack import Stack, service_env

    settings = Settings()
    stack = Stack(settings, only=SERVICES)
    stack.start()
    try:
        os.environ.update(service_env(settings))
        instance = DagsterInstance.from_config(str(settings.dagster_home))
        client = MlflowClient(settings.mlflow_url)
        name = settings.price_model_name

        [(first, _)] = _wait("the first batch", lambda: _landed(settings), every_s=0.2)
        _faults(settings, fail_next=10**6)  # the next batch is not available yet
        print(f"{first} landed; waiting for it to become production", flush=True)
        _wait("production v1", lambda: _production(client, name))
        _wait("the first batch's run", lambda: _finished(instance, "ingest_batch", first))
        v1 = _production(client, name)
        print(f"production v{v1}; serving the next batch", flush=True)

        _faults(settings)
        t0 = time.time()
        _wait("a new production", lambda: _production(client, name) not in (None, v1))
        t_production = time.time()
        seconds = t_production - t0
        with connect("raw_data", settings) as raw, connect("clean_data", settings) as clean:
            newest = batch_history(raw, clean)[-1]
        key, rows, reasons = newest.key, newest.rows_landed, newest.reasons
        _wait("the batch's run records", lambda: _finished(instance, "ingest_batch", key))
        result = {
            "rows": rows,
            "seconds": round(seconds, 1),
            "batch": key,
            "production_version": _production(client, name),
            "verdict_reasons": reasons[:3],
            "breakdown_seconds": breakdown(instance, settings, key, t0, t_production),
            "training_seconds": training_breakdown(client, name, _production(client, name)),
            "load_average_1min": round(os.getloadavg()[0], 1),
            "cpus": os.cpu_count(),
        }
    finally:
        stack.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
