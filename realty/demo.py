"""`make demo`: watch every batch of the source travel through Dagster into RAW and CLEAN."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from realty.settings import Settings
from realty.stack import Stack, service_env

DEMO_TIMEOUT_S = 30 * 60


@dataclass(frozen=True)
class BatchLine:
    key: str
    batch_number: int
    raw_rows: int
    clean_rows: int
    rejected_rows: int
    seconds: float  # the ingest run, start to end
    latency_s: float  # from landing in RAW to committed in CLEAN, queueing included


def _landed(settings: Settings) -> tuple[dict[str, tuple[int, float]], bool]:
    """Landed batches (key → batch number, fetch time) and whether the source is exhausted."""
    with psycopg.connect(settings.database_url("raw_data")) as conn:
        landed = {
            key: (number, fetched.timestamp())
            for key, number, fetched in conn.execute(
                "SELECT batch_key, batch_number, fetched_at FROM raw_batches ORDER BY seq"
            )
        }
        exhausted = conn.execute(
            "SELECT 1 FROM source_progress WHERE group_number = %s AND day = %s "
            "AND exhausted_at IS NOT NULL",
            (settings.group_number, settings.day),
        ).fetchone()
    return landed, exhausted is not None


def _cleaned(settings: Settings) -> dict[str, tuple[int, int, int, float]]:
    with psycopg.connect(settings.database_url("clean_data")) as conn:
        return {
            key: (raw, clean, rejected, cleaned_at.timestamp())
            for key, raw, clean, rejected, cleaned_at in conn.execute(
                "SELECT batch_key, raw_rows, clean_rows, rejected_rows, cleaned_at "
                "FROM clean_batches"
            )
        }


def _ingest_runs(instance) -> tuple[dict[str, float], set[str]]:
    """Seconds of the latest successful ingest run per batch, and the batches whose runs failed."""
    from dagster import DagsterRunStatus, RunsFilter

    records = instance.get_run_records(
        RunsFilter(
            job_name="ingest_batch",
            statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE],
        )
    )
    seconds: dict[str, float] = {}
    failed: set[str] = set()
    for record in sorted(records, key=lambda r: r.create_timestamp):
        key = record.dagster_run.tags.get("dagster/partition", "")
        if record.dagster_run.status == DagsterRunStatus.SUCCESS:
            seconds[key] = round(record.end_time - record.start_time, 2)
            failed.discard(key)
        else:
            failed.add(key)
    return seconds, failed


def _table(lines: list[BatchLine]) -> Table:
    table = Table(
        "batch",
        "#",
        "raw",
        "clean",
        "rejected",
        "run s",
        "landed→clean s",
        title="ingested batches",
    )
    for line in lines:
        table.add_row(
            line.key, str(line.batch_number), f"{line.raw_rows:,}", f"{line.clean_rows:,}",
            f"{line.rejected_rows:,}", f"{line.seconds:.1f}", f"{line.latency_s:.1f}",
        )  # fmt: skip
    return table


def run(settings: Settings, stack: Stack, console: Console) -> bool:
    """Wait until the source is exhausted and every landed batch is cleaned or failed."""
    from dagster import DagsterInstance

    os.environ.update(service_env(settings))
    instance = DagsterInstance.from_config(str(settings.dagster_home))
    expected = None if settings.source_url else settings.source_batches
    lines: dict[str, BatchLine] = {}
    failed: set[str] = set()
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("ingesting batches through Dagster", total=expected)
        while time.monotonic() < deadline:
            stack.check()
            landed, exhausted = _landed(settings)
            cleaned = _cleaned(settings)
            run_seconds, failed = _ingest_runs(instance)
            failed &= set(landed)
            done = (set(cleaned) & set(landed) & set(run_seconds)) - set(lines)
            for key in sorted(done, key=lambda k: landed[k][0]):
                number, fetched_at = landed[key]
                raw, clean, rejected, cleaned_at = cleaned[key]
                latency = round(cleaned_at - fetched_at, 2)
                lines[key] = BatchLine(key, number, raw, clean, rejected, run_seconds[key], latency)
                progress.console.print(
                    f"  {key}: {raw:,} raw → {clean:,} clean, {rejected:,} rejected "
                    f"(run {run_seconds[key]:.1f} s)"
                )
            progress.update(
                task,
                completed=len(lines) + len(failed),
                total=len(landed) if exhausted else expected,
            )
            if exhausted and set(landed) <= set(lines) | failed:
                break
            time.sleep(1.0)
    ordered = sorted(lines.values(), key=lambda line: line.batch_number)
    console.print(_table(ordered))
    ok = not failed and bool(ordered) and exhausted
    for key in sorted(failed):
        console.print(
            f"[red]batch {key} failed[/]: see its run in the Dagster UI ({settings.dagster_url})"
        )
    summary = {
        "source": {
            "url": settings.data_api_url,
            "group_number": settings.group_number,
            "day": settings.day,
            "simulated": settings.source_url is None,
            "exhausted": exhausted,
        },
        "batches": [asdict(line) for line in ordered],
        "failed_batches": sorted(failed),
        "services": {
            "dagster": settings.dagster_url,
            "mlflow": settings.mlflow_url,
            "source": settings.data_api_url,
        },
    }
    summary_path = settings.home / "demo" / "summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    console.print(f"summary written to {summary_path}")
    console.print("[bold]UIs[/]")
    console.print(f"  Dagster (lineage, runs, checks)  {settings.dagster_url}")
    console.print(f"  MLflow (experiments, registry)   {settings.mlflow_url}")
    console.print(f"  data API simulator (OpenAPI)     {settings.data_api_url}/docs")
    return ok
