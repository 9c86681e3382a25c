"""GET /v1/monitoring over real HTTP: an hour profiled by the real served_traffic asset and an
alert raised by realty.alerts, read back from the test PostgreSQL server."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import dagster as dg
import httpx
import psycopg
import pytest

from realty import alerts
from realty_assets.assets.monitoring import served_traffic
from realty_assets.resources import build_resources
from tests.realty.model.test_guardrails import insert_labels
from tests.realty_assets.test_monitoring import log_served

pytestmark = pytest.mark.integration

HOUR = datetime(2026, 1, 2, 10, tzinfo=UTC)  # an hour no other test serves


def profiled_hour(production_models, dagster_instance, hour: datetime = HOUR) -> int:
    """300 listings answered by production within ``hour``, profiled by the asset; returns
    the id of an alert raised for it."""
    settings, version = production_models.settings, production_models.price_version
    sample = production_models.listings.head(300)
    listings = json.loads(
        sample.drop(columns=["price", "prev_sold_date"]).to_json(orient="records")
    )
    log_served(settings, version, listings, list(sample["price"]), hour=hour)
    partition = f"{hour:%Y-%m-%d-%H:%M}"
    assert dg.materialize(
        [served_traffic], partition_key=partition, instance=dagster_instance,
        resources=build_resources(settings),
    ).success  # fmt: skip
    evaluation = alerts.Evaluation(
        record_id=random.randrange(10**12, 10**13), asset="served_traffic",
        check_name="served_traffic_healthy", partition=partition, passed=False,
        severity="ERROR", description=f"v{version}: p99 latency 400 ms", run_id="test-run",
        evaluated_at=datetime.now(UTC),
    )  # fmt: skip
    with alerts_connection(settings) as conn:
        alerts.record(conn, evaluation)
        [(alert_id,)] = conn.execute(
            "SELECT alert_id FROM alerts WHERE record_id = %s", (evaluation.record_id,)
        ).fetchall()
    return alert_id


def alerts_connection(settings) -> psycopg.Connection:
    return psycopg.connect(settings.database_url("clean_data"), autocommit=True)


def test_the_served_windows_and_the_alerts_are_read_back(
    serving_server, production_models, dagster_instance
) -> None:
    alert_id = profiled_hour(production_models, dagster_instance)

    answer = httpx.get(
        f"{serving_server.url}/v1/monitoring", params={"since": HOUR.isoformat(), "alerts": 500}
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    [window] = [w for w in body["windows"] if w["window_start"].startswith("2026-01-02T10")]
    assert (window["version"], window["listings"], window["error_rate"]) == (
        production_models.price_version, 300, 0.0,
    )  # fmt: skip
    assert window["latency_ms"]["p99"] >= window["latency_ms"]["p50"] >= 5.0
    assert window["predictions"]["p10"] <= window["predictions"]["p50"]
    [alert] = [a for a in body["alerts"] if a["alert_id"] == alert_id]
    assert (alert["state"], alert["check_name"], alert["delivered_at"]) == (
        "firing", "served_traffic_healthy", None,
    )  # fmt: skip
    assert httpx.get(f"{serving_server.url}/v1/monitoring", params={"hours": 0}).status_code == 422


def test_the_realized_error_of_each_version_comes_from_the_sales_labelled(serving_server) -> None:
    name, version = serving_server.settings.price_model_name, f"9{random.randrange(10**6)}"
    request = f"sold-{version}"
    sold = [(request, i, "production", version, 1.25e5, "sale", 1e5) for i in range(20)]
    sold += [(request, 20 + i, "shadow", version, 1e5, "sale", 1e5) for i in range(5)]
    relisted = [(request, 30, "production", version, 9e5, "relisting", 1e5)]
    insert_labels(serving_server.settings, name, sold + relisted)

    body = httpx.get(f"{serving_server.url}/v1/monitoring").json()

    mine = {row["role"]: row for row in body["realized"] if row["version"] == version}
    assert (mine["production"]["sales"], mine["shadow"]["sales"]) == (20, 5)  # no relisting
    assert mine["production"]["mae_usd"] == pytest.approx(25_000)
    assert mine["production"]["mape"] == pytest.approx(0.25)
    assert mine["shadow"]["mae_log"] == pytest.approx(0.0)
    assert mine["production"]["coverage"] is None and mine["production"]["coverage_n"] == 0


def test_realized_error_over_time_follows_the_labelling_batches(serving_server) -> None:
    settings, tag = serving_server.settings, random.randrange(10**9)
    batches = [f"g9-over-time-{tag}-b{i}" for i in (1, 2)]
    with alerts_connection(settings) as conn:
        for seq, key in enumerate(batches, start=10**12 + tag):
            conn.execute(
                "INSERT INTO clean_batches (batch_key, seq, group_number, day, batch_number, "
                "raw_rows, clean_rows, rejected_rows, rejects_by_reason, null_fractions) "
                "VALUES (%s, %s, 9, 'over-time', 1, 0, 0, 0, '{}', '{}')",
                (key, seq),
            )
        for key, mae in zip(batches, (0.3, 0.4), strict=True):
            figures = {"sales": 40, "mae_log": mae, "mape": 0.2, "coverage": 0.9}
            conn.execute(
                "INSERT INTO realized_performance VALUES (%s, %s, '7', 'production', %s)",
                (key, settings.price_model_name, json.dumps(figures)),
            )
            conn.execute(  # a batch that labelled nothing of this arm is no point in time
                "INSERT INTO realized_performance VALUES (%s, %s, '7', 'shadow', %s)",
                (key, settings.price_model_name, json.dumps({"sales": 0})),
            )

    try:
        body = httpx.get(f"{serving_server.url}/v1/monitoring").json()
    finally:  # other tests read clean_batches whole
        with alerts_connection(settings) as conn:
            conn.execute("DELETE FROM realized_performance WHERE batch_key = ANY(%s)", (batches,))
            conn.execute("DELETE FROM clean_batches WHERE batch_key = ANY(%s)", (batches,))

    mine = [r for r in body["realized_over_time"] if r["batch_key"] in batches]
    assert [(r["batch_key"], r["role"], r["mae_log"]) for r in mine] == [
        (batches[0], "production", 0.3), (batches[1], "production", 0.4),
    ]  # fmt: skip
