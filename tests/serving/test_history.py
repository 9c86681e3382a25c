"""GET /v1/batches: batches landed, cleaned and judged by the platform's own code, read back over
real HTTP (uvicorn) from the test PostgreSQL server."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator

import httpx
import pandas as pd
import psycopg
import pytest
from fastapi import FastAPI
from mlflow import MlflowClient

from realty.drift import DriftThresholds, ReferenceProfile, drift_report
from realty.ingest.data_api import FetchedBatch
from realty.ingest.landing import land_payload
from realty.model_error import PerformanceDrift
from realty.schema import LISTING_COLUMNS
from realty.settings import Settings
from realty.store.clean import clean_landed_batch, read_clean_listings
from realty.store.ledger import store_verdict
from realty.verdict import Verdict
from realty_ops.sandbox import REALTOR_SAMPLE, app_in_thread, free_port
from serving.routes import history

pytestmark = pytest.mark.integration

ROWS_PER_BATCH = 600


def sample_rows(skip: int) -> list[list[str | None]]:
    """Real listings of the sample, each with a street id of its own: CLEAN keeps a listing
    once per database, and the session's other tests land the same sample."""
    with gzip.open(REALTOR_SAMPLE, "rt") as handle:
        frame = pd.read_csv(
            handle, dtype=str, keep_default_na=False, skiprows=range(1, skip + 1),
            nrows=ROWS_PER_BATCH,
        )  # fmt: skip
    frame["street"] = [str(random.randrange(10**9, 10**10)) for _ in range(len(frame))]
    return [[value or None for value in row] for row in frame[list(LISTING_COLUMNS)].values]


def land(conn: psycopg.Connection, group: int, number: int) -> str:
    rows = sample_rows(skip=number * ROWS_PER_BATCH)
    body = json.dumps({"group_number": group, "day": "Tuesday", "batch_number": number,
                       "data": rows}).encode()  # fmt: skip
    batch = FetchedBatch(group, "Tuesday", number, body, rows)
    return land_payload(conn, batch, "http://test").key


# Every table that holds a batch's rows or records, children before parents.
BATCH_TABLES = {
    "raw_data": ("raw_listings", "raw_batches"),
    "clean_data": (
        "clean_listings",
        "rejected_listings",
        "batch_predictions",
        "model_decisions",
        "drift_reports",
        "clean_batches",
    ),
}


@pytest.fixture(scope="module")
def judged_batches(production_models) -> Iterator[dict[str, object]]:
    landed = land_and_judge(production_models.settings, production_models.price_version)
    yield landed
    forget_batches(production_models.settings, landed["keys"])


def forget_batches(settings: Settings, keys: list[str]) -> None:
    """Remove ``keys`` from RAW and CLEAN. Left behind, these batches would wait for an ingest
    run and their verdicts for a follow-up, and the sensors of later tests on this server would
    find them."""
    for database, tables in BATCH_TABLES.items():
        with psycopg.connect(settings.database_url(database)) as conn:
            for table in tables:
                conn.execute(f"DELETE FROM {table} WHERE batch_key = ANY(%s)", (keys,))


def land_and_judge(settings: Settings, production_version: str) -> dict[str, object]:
    """Three batches of a fresh stream, through the platform's landing, cleaning and drift code:
    the first trained v41 (initial), the second was judged against production, the third is
    only landed."""
    group = random.randint(1_000, 1_000_000)  # a stream no other test uses
    with (
        psycopg.connect(settings.database_url("raw_data")) as raw,
        psycopg.connect(settings.database_url("clean_data")) as clean,
    ):
        keys = [land(raw, group, number) for number in (1, 2, 3)]
        accounts = [clean_landed_batch(raw, clean, key) for key in keys[:2]]
        first, second = (read_clean_listings(clean, [key]) for key in keys[:2])
        store_verdict(clean, Verdict(keys[0], drift_report(None, first), None))
        clean.execute(
            "INSERT INTO model_decisions (batch_key, trigger, reasons, snapshot_hash, "
            "mlflow_run_id, candidate_version, candidate_metrics, promoted, decision_reason, "
            "production_version) VALUES (%s, 'initial', '[\"initial baseline\"]', 'h', 'r', "
            "'41', '{}', true, 'no production model yet', '41')",
            (keys[0],),
        )
        production = MlflowClient(settings.mlflow_url).get_model_version(
            settings.price_model_name, production_version
        )
        performance = PerformanceDrift({"mae_log": 0.5}, {"mae_log": 0.4})
        report = drift_report(
            ReferenceProfile.from_frame(first), second, DriftThresholds(min_rows=10), performance
        )
        store_verdict(clean, Verdict(keys[1], report, production))
    return {"keys": keys, "accounts": accounts, "report": report, "version": production.version}


def test_batches_tell_rows_verdicts_scores_and_decisions(serving_server, judged_batches) -> None:
    response = httpx.get(f"{serving_server.url}/v1/batches", timeout=30)
    assert response.status_code == 200
    by_key = {b["batch_key"]: b for b in response.json()["batches"]}
    first, second, third = (by_key[key] for key in judged_batches["keys"])
    ordered = [b["batch_key"] for b in response.json()["batches"]]
    assert ordered.index(first["batch_key"]) < ordered.index(second["batch_key"])

    for batch, account in zip((first, second), judged_batches["accounts"], strict=True):
        assert batch["rows_landed"] == ROWS_PER_BATCH
        assert (batch["rows_clean"], batch["rows_rejected"]) == (
            account.clean_rows,
            account.rejected_rows,
        )
        assert batch["rows_clean"] + batch["rows_rejected"] == ROWS_PER_BATCH

    assert first["verdict"] == "retrain" and first["reasons"] == ["initial baseline"]
    assert (first["trained"], first["trigger"], first["promoted"]) == (True, "initial", True)
    assert first["production_version"] == "41"

    report = judged_batches["report"]
    assert second["verdict"] == ("retrain" if report.retrain else "keep")
    assert second["reasons"] == report.reasons
    assert second["compared_with_version"] == judged_batches["version"]
    assert second["trained"] is False and second["production_version"] == judged_batches["version"]
    scores = second["scores"]
    top = max(report.features, key=lambda f: f.psi)
    assert (scores["max_psi_feature"], scores["max_feature_psi"]) == (top.feature, top.psi)
    assert scores["target_psi"] == pytest.approx(report.target.psi)
    assert scores["unseen_city_share"] == pytest.approx(report.unseen["city"].share)
    assert scores["mae_change"] == pytest.approx(0.25)

    assert third["rows_clean"] is None and third["verdict"] is None and third["scores"] is None


@pytest.fixture
def history_without_database(pg_settings) -> Iterator[str]:
    """The history router alone, configured for a PostgreSQL server that is not there."""
    app = FastAPI()
    app.state.settings = pg_settings.model_copy(update={"pg_port": free_port()})
    app.include_router(history.router)
    with app_in_thread(app) as url:
        yield url


def test_a_database_that_is_down_answers_503_with_a_reason(history_without_database) -> None:
    response = httpx.get(f"{history_without_database}/v1/batches", timeout=30)
    assert response.status_code == 503
    assert "raw_data database is not reachable" in response.json()["detail"]
