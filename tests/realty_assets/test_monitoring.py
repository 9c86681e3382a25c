"""The served_traffic asset on real rows: one hour of inference log in PostgreSQL, the real
price model's reference profile in MLflow, a real materialization with its check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
from psycopg.types.json import Jsonb

from realty_assets.assets.monitoring import SERVED_CHECK, served_traffic
from realty_assets.resources import build_resources

HOUR = datetime(2026, 1, 1, 10, tzinfo=UTC)  # before any other test's rows
PARTITION = "2026-01-01-10:00"


def log_served(
    settings, version: str, listings: list[dict], predictions: list, role="production", hour=HOUR
):
    """Inference log rows of ``listings`` answered by ``version`` within ``hour``."""
    rows = [
        (f"served-{hour:%m%d%H}-{role}-{item}", item, hour + timedelta(seconds=item % 3_000),
         version, 5.0 + item % 10, Jsonb(listing), prediction, role)
        for item, (listing, prediction) in enumerate(zip(listings, predictions, strict=True))
    ]  # fmt: skip
    with psycopg.connect(settings.database_url("raw_data")) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO inference_log (request_id, item, logged_at, route, model_name, "
            "model_version, latency_ms, listing, prediction, role) "
            "VALUES (%s, %s, %s, '/v1/price/predict', 'realty-price', %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            rows,
        )


def test_an_hour_of_served_traffic_is_profiled_per_version(production_models, dagster_instance):
    settings, version = production_models.settings, production_models.price_version
    sample = production_models.listings.head(600)
    listings = json.loads(
        sample.drop(columns=["price"]).to_json(orient="records", date_format="iso")
    )
    for listing in listings:
        listing["prev_sold_date"] = (listing.get("prev_sold_date") or "")[:10] or None
    served = [{**listing, "state": "Atlantis"} if i < 300 else listing
              for i, listing in enumerate(listings)]  # fmt: skip
    prices = [None if i < 30 else float(p) for i, p in enumerate(sample["price"])]  # 5% failed
    log_served(settings, version, served, prices)
    log_served(settings, version, served[:100], prices[:100], role="shadow")  # answered nobody

    result = dg.materialize(
        [served_traffic], partition_key=PARTITION, instance=dagster_instance,
        resources=build_resources(settings),
    )  # fmt: skip

    assert result.success
    [materialization] = result.asset_materializations_for_node("served_traffic")
    chart = materialization.metadata["last_day"].value
    assert chart.startswith("![served traffic](data:image/png;base64,iVBOR")  # a PNG
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == SERVED_CHECK and not check.passed
    problems = check.metadata["problems"].value
    assert f"v{version}: error rate 5.0%" in problems
    assert any("Atlantis" in problem or "never seen" in problem for problem in problems), problems
    with psycopg.connect(settings.database_url("clean_data")) as conn:
        [(profile,)] = conn.execute(
            "SELECT profile FROM served_windows WHERE window_start = %s AND model_name = %s",
            (HOUR, "realty-price"),
        ).fetchall()
    assert (profile["version"], profile["listings"], profile["errors"]) == (version, 600, 30)
    assert profile["latency_ms"]["p50"] >= 5.0 and profile["latency_ms"]["p99"] <= 14.0
    assert profile["missing"]["bed"] == sample["bed"].isna().mean()
    assert profile["predictions"]["p50"] == sample["price"].iloc[30:].median()
    assert profile["drift"]["unseen"]["state"]["share"] == 0.5  # of every listing received

    again = dg.materialize(
        [served_traffic], partition_key=PARTITION, instance=dagster_instance,
        resources=build_resources(settings),
    )  # fmt: skip
    assert again.success
    with psycopg.connect(settings.database_url("clean_data")) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM served_windows WHERE window_start = %s", (HOUR,)
        ).fetchone()[0]
    assert rows == 1  # re-running a window replaces it
