"""`make demo`: watch every batch of the source travel through Dagster: RAW, CLEAN, a drift
verdict, and (when there is a reason) training, the champion/challenger gate and scoring."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from realty.ingest.landing import source_exhausted
from realty.settings import Settings
from realty.store.db import connect
from realty.store.ledger import BatchRecord, batch_history
from realty_ops.stack import Stack, service_env

DEMO_TIMEOUT_S = 30 * 60


FOLLOW_UP_JOBS = ("train_model", "score_batch")


@dataclass(frozen=True)
class BatchLine:
    key: str
    batch_number: int
    raw_rows: int
    clean_rows: int
    rejected_rows: int
    seconds: float  # the ingest run, start to end
    latency_s: float  # from landing in RAW to committed in CLEAN, queueing included
    drift: dict  # {"retrain": bool, "reasons": [...]}
    trained: bool
    candidate_version: str | None
    promoted: bool | None
    production_version: str | None  # after this batch
    metrics: dict  # production's scores on its evaluation data: mae_usd, rmse_log, r2_log
    follow_up_seconds: float  # its follow-up run (0: its chain ran in the ingest run)


def _history(settings: Settings) -> tuple[dict[str, BatchRecord], bool]:
    """Landed batches by key, with what the loop made of them, and whether the source is
    exhausted."""
    with connect("raw_data", settings) as raw, connect("clean_data", settings) as clean:
        history = {record.key: record for record in batch_history(raw, clean)}
        exhausted = source_exhausted(raw, settings.group_number, settings.day)
    return history, exhausted


def _runs(instance, job_names: tuple[str, ...]) -> tuple[dict[str, float], set[str]]:
    """Seconds of the latest successful run of these jobs per batch, and the batches whose
    latest run failed."""
    from dagster import DagsterRunStatus, RunsFilter

    records = [
        record
        for job_name in job_names
        for record in instance.get_run_records(
            RunsFilter(
                job_name=job_name, statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]
            )
        )
    ]
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


def _metrics(settings: Settings, version: str | None) -> dict:
    if version is None:
        return {}
    from mlflow import MlflowClient

    from realty.model.versions import version_metrics

    scores = version_metrics(
        MlflowClient(settings.mlflow_url).get_model_version(settings.price_model_name, version)
    )
    return {name: scores.get(name) for name in ("mae_usd", "rmse_log", "r2_log")}


def _top_reason(line: BatchLine) -> str:
    reasons = line.drift["reasons"]
    return reasons[0] if reasons else "no drift"


def _describe(line: BatchLine) -> str:
    verdict = "retrain" if line.drift["retrain"] else "keep"
    if not line.trained:
        action = f"kept production v{line.production_version}"
    elif line.promoted:
        action = f"trained v{line.candidate_version}, promoted"
    else:
        action = f"trained v{line.candidate_version}, kept production v{line.production_version}"
    mae = line.metrics.get("mae_usd")
    score = f", MAE ${mae:,.0f} R² {line.metrics.get('r2_log', 0):.3f}" if mae else ""
    return (
        f"  {line.key}: {line.raw_rows:,} raw → {line.clean_rows:,} clean, "
        f"{line.rejected_rows:,} rejected; {verdict} ({_top_reason(line)}); {action}{score}"
    )


def _table(lines: list[BatchLine]) -> Table:
    table = Table(
        "batch", "raw", "clean", "rejected", "verdict", "top reason", "candidate", "promoted",
        "production", "MAE $", "R² log", "run s",
        title="batches through the loop",
    )  # fmt: skip
    for line in lines:
        mae, r2 = line.metrics.get("mae_usd"), line.metrics.get("r2_log")
        table.add_row(
            line.key, f"{line.raw_rows:,}", f"{line.clean_rows:,}", f"{line.rejected_rows:,}",
            "retrain" if line.drift["retrain"] else "keep", _top_reason(line)[:60],
            f"v{line.candidate_version}" if line.trained else "-",
            {True: "yes", False: "no", None: "-"}[line.promoted],
            f"v{line.production_version}" if line.production_version else "-",
            f"{mae:,.0f}" if mae else "-", f"{r2:.3f}" if r2 is not None else "-",
            f"{line.seconds + line.follow_up_seconds:.1f}",
        )  # fmt: skip
    return table


def _line(settings: Settings, record: BatchRecord, seconds: tuple[float, float]) -> BatchLine:
    ingest_seconds, follow_up_seconds = seconds
    return BatchLine(
        record.key, record.batch_number, record.rows_landed, record.rows_clean,
        record.rows_rejected, ingest_seconds,
        latency_s=round((record.cleaned_at - record.landed_at).total_seconds(), 2),
        drift={"retrain": record.retrain, "reasons": record.reasons},
        trained=record.candidate_version is not None,
        candidate_version=record.candidate_version,
        promoted=record.promoted,
        production_version=record.production_version,
        metrics=_metrics(settings, record.production_version),
        follow_up_seconds=follow_up_seconds,
    )  # fmt: skip


SERVING_EXAMPLES = 3
SERVING_WAIT_S = 60.0  # the service's poller needs up to REALTY_SERVING_POLL_INTERVAL_S


def _serving_examples(settings: Settings, batch_key: str, production: str | None) -> dict:
    """A few listings of ``batch_key`` priced by the serving API once it serves ``production``:
    its answer (the version that priced them) and the listings."""
    from realty.model.price_model import client_example
    from realty.store.clean import read_clean_listings

    with connect("clean_data", settings) as conn:
        listings = client_example(read_clean_listings(conn, [batch_key]).head(SERVING_EXAMPLES))
    with httpx.Client(base_url=settings.serving_url, timeout=30) as client:
        _wait_until_serving(client, settings.price_model_name, production)
        response = client.post("/v1/price/predict", json={"listings": listings.to_dict("records")})
    response.raise_for_status()
    return {"answer": response.json(), "listings": listings.to_dict("records")}


def _wait_until_serving(
    client: httpx.Client, name: str, version: str | None, wait_s: float = SERVING_WAIT_S
) -> None:
    """Until the serving API has loaded ``version`` of model ``name`` (any, if None), or
    ``wait_s`` passed."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        loaded = {m["name"]: m["loaded"] for m in client.get("/v1/models").json()["models"]}
        model = loaded.get(name) or {}
        if model and (version is None or model.get("version") == version):
            return
        time.sleep(1.0)


ADMIN_RELOAD = "POST /v1/admin/reload"  # needs REALTY_SERVING_ADMIN_TOKEN; not called
DIGITS_WAIT_S = 600.0  # digits_model's run, launched by its automation at the stack's start


def _route_statuses(settings: Settings) -> dict[str, int]:
    """Every route of the serving API called once as its clients call it: the status of each
    answer (`METHOD path` → code). The digits model is waited for: its asset is materialized
    by automation when the stack starts, beside the batches."""
    import base64
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    from serving.schemas import EXAMPLE_LISTING

    eight = base64.b64encode(json.dumps(load_digits().images[8].tolist()).encode()).decode()
    photo = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 160, 200)).save(photo, format="JPEG")
    upload = {"file": ("photo.jpg", photo.getvalue(), "image/jpeg")}
    calls = {
        "GET /health": {},
        "GET /ready": {},
        "GET /metrics": {},
        "GET /v1/models": {},
        "GET /v1/batches": {},
        "GET /v1/rollout": {},
        "GET /v1/monitoring": {},
        "POST /v1/price/predict": {"json": {"listings": [EXAMPLE_LISTING]}},
        "POST /v1/price/explain": {"json": {"listing": EXAMPLE_LISTING}},
        "POST /v1/digits/predict": {"json": {"request_id": "demo", "image": eight}},
        "POST /predict/": {"json": {"request_id": "demo", "model": "digits", "image": eight}},
        "POST /v1/detect": {"files": upload},
        "POST /v1/count": {"files": upload},
        "POST /predict": {"files": upload},
        "POST /countObjects": {"files": upload},
    }
    with httpx.Client(base_url=settings.serving_url, timeout=60) as client:
        _wait_until_serving(client, settings.digits_model_name, None, DIGITS_WAIT_S)
        statuses = {
            call: client.request(*call.split(" "), **request).status_code
            for call, request in calls.items()
        }
        paths = client.get("/openapi.json").json()["paths"]
    # A route this list does not know answers as not called (None), so a new one is not missed;
    # the admin route is disabled unless a token is configured.
    for path, methods in paths.items():
        for method in methods:
            statuses.setdefault(f"{method.upper()} {path}", None)
    return statuses


def _print_serving_examples(examples: dict, console: Console) -> None:
    answer = examples["answer"]
    model = answer["model"]
    priced = answer["predictions"]
    console.print(f"[bold]serving[/] priced {len(priced)} listings of the last batch")
    for listing, prediction in zip(examples["listings"], priced, strict=True):
        place = f"{listing.get('city')}, {listing.get('state')}"
        facts = f"{listing.get('bed') or '?'} bed, {listing.get('house_size') or '?'} sq ft"
        console.print(
            f"  {place:<36} {facts:<22} → ${prediction['price']:,.0f}"
            f"  ({model['name']} v{model['version']})"
        )


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
        task = progress.add_task("batches through the loop", total=expected)
        while time.monotonic() < deadline:
            stack.supervise()
            history, exhausted = _history(settings)
            ingest_seconds, failed_ingest = _runs(instance, ("ingest_batch",))
            follow_up_seconds, failed_follow_up = _runs(instance, FOLLOW_UP_JOBS)
            # A retrain verdict's chain runs in its ingest run: no follow-up run to wait for.
            chained = {key for key, record in history.items() if record.promoted is not None}
            follow_up_seconds = {key: 0.0 for key in chained} | follow_up_seconds
            failed = (failed_ingest | failed_follow_up) & set(history)
            judged = {key for key, record in history.items() if record.retrain is not None}
            done = judged & set(ingest_seconds) & set(follow_up_seconds)
            for key in sorted(done - set(lines), key=lambda k: history[k].batch_number):
                seconds = (ingest_seconds[key], follow_up_seconds[key])
                lines[key] = _line(settings, history[key], seconds)
                progress.console.print(_describe(lines[key]))
            progress.update(
                task,
                completed=len(lines) + len(failed),
                total=len(history) if exhausted else expected,
            )
            if exhausted and set(history) <= set(lines) | failed:
                break
            time.sleep(1.0)
    ordered = sorted(lines.values(), key=lambda line: line.batch_number)
    console.print(_table(ordered))
    ok = not failed and bool(ordered) and exhausted
    for key in sorted(failed):
        console.print(
            f"[red]batch {key} failed[/]: see its run in the Dagster UI ({settings.dagster_url})"
        )
    production = ordered[-1].production_version if ordered else None
    summary = {
        "production": {
            "name": settings.price_model_name,
            "version": production,
            "metrics": _metrics(settings, production),
        },
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
            "serving": settings.serving_url,
            "ui": settings.ui_url,
        },
    }
    if ordered:
        try:
            examples = _serving_examples(settings, ordered[-1].key, production)
        except Exception as error:  # the summary is still worth writing
            ok = False
            console.print(f"[red]the serving API did not price the examples[/]: {error}")
        else:
            _print_serving_examples(examples, console)
            summary["serving_examples"] = examples
    try:
        summary["routes"] = _route_statuses(settings)
    except httpx.HTTPError as error:
        summary["routes"] = {"serving": repr(error)}
    failing = {
        call: code
        for call, code in summary["routes"].items()
        if code != 200 and call != ADMIN_RELOAD
    }
    if failing:
        ok = False
        console.print(f"[red]serving routes that did not answer 200[/]: {failing}")
    else:
        console.print(f"[bold]serving[/] every route answers ({len(summary['routes'])} checked)")
    summary_path = settings.home / "demo" / "summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    console.print(f"summary written to {summary_path}")
    console.print("[bold]UIs[/]")
    console.print(f"  Dagster (lineage, runs, checks)  {settings.dagster_url}")
    console.print(f"  MLflow (experiments, registry)   {settings.mlflow_url}")
    console.print(f"  data API simulator (OpenAPI)     {settings.data_api_url}/docs")
    console.print(f"  serving API (OpenAPI)            {settings.serving_url}/docs")
    console.print(f"  web app (price, models, drift)   {settings.ui_url}")
    return ok
