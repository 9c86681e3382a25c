"""Late labels on real rows: a batch landed and cleaned by the platform brings the sales of
listings that were priced before it landed; a real materialization of realized_performance
joins them and its check judges the versions. Known pairs: precision and recall of the join."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
from mlflow import MlflowClient
from psycopg.types.json import Jsonb

from realty.ingest.data_api import FetchedBatch
from realty.ingest.landing import land_payload
from realty.schema import LISTING_COLUMNS, listing_identity
from realty.store.clean import clean_landed_batch
from realty.verdict import judge_batch
from realty_assets.assets.realized import REALIZED_CHECK, realized_performance
from realty_assets.partitions import batch_partitions
from realty_assets.resources import build_resources
from tests.serving.test_history import forget_batches, sample_rows

COLUMN = {name: i for i, name in enumerate(LISTING_COLUMNS)}
SOLD, RELISTED, UNSOLD = range(0, 60), range(60, 80), range(80, 200)


def _batch(today: str) -> list[list]:
    """200 real listings: 60 sold (no date), 20 relisted having sold today (after yesterday's
    predictions), the rest for sale with old sale dates (no change of hands since)."""
    rows = sample_rows(skip=3_000)[:200]
    for i, row in enumerate(rows):
        row[COLUMN["status"]] = "sold" if i in SOLD else "for_sale"
        row[COLUMN["prev_sold_date"]] = (
            None if i in SOLD else today if i in RELISTED else "2001-05-05"
        )
    return rows


def _as_posted(row: list) -> dict:
    """The listing as a client posts it: a float zip code, a shouted state, spaces."""
    listing = {name: row[i] for name, i in COLUMN.items() if name != "price"}
    listing["state"] = f" {str(listing['state']).upper()} "
    if listing["zip_code"]:
        listing["zip_code"] = float(listing["zip_code"])
    return listing


def _log(settings, version: str, rows: list[list], before: datetime) -> set[tuple]:
    """Predictions of every listing (production, and a shadow of the first 30), at half its
    price, logged a day before ``before``; decoys that must not join: the same street in
    another city, and predictions logged after the batch landed. Returns the true pairs."""
    logged, true_pairs = [], set()
    for i, row in enumerate(rows):
        listing = _as_posted(row)
        price = float(row[COLUMN["price"]]) / 2
        roles = ("production", "shadow") if i < 30 else ("production",)
        for role in roles:
            logged.append((f"real-{i}", 0, role, before - timedelta(days=1), listing, price))
            if i in SOLD or i in RELISTED:
                true_pairs.add((f"real-{i}", 0, role))
        elsewhere = {**listing, "city": "Nowhere Else"}
        logged.append(
            (f"decoy-city-{i}", 0, "production", before - timedelta(days=1), elsewhere, price)
        )
        logged.append(
            (f"decoy-late-{i}", 0, "production", before + timedelta(hours=1), listing, price)
        )
    run = random.randrange(10**9)
    with psycopg.connect(settings.database_url("raw_data")) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO inference_log (request_id, item, logged_at, route, model_name, "
            "model_version, latency_ms, listing, prediction, role, listing_key, interval_level, "
            "interval_low, interval_high) VALUES (%s, %s, %s, '/v1/price/predict', %s, %s, 5, "
            "%s, %s, %s, %s, 0.9, %s, %s)",
            [
                (f"{run}-{rid}", item, at, settings.price_model_name, version, Jsonb(listing),
                 price, role, listing_identity(listing), price * 0.5, price * 1.5)
                for rid, item, role, at, listing, price in logged
            ],
        )  # fmt: skip
    return {(f"{run}-{rid}", item, role) for rid, item, role in true_pairs}


def test_the_sales_a_batch_brings_label_the_predictions_before_it(
    production_models, dagster_instance
) -> None:
    settings, version = production_models.settings, production_models.price_version
    landing = datetime.now(UTC)
    rows, group = _batch(landing.date().isoformat()), random.randint(1_000, 1_000_000)
    true_pairs = _log(settings, version, rows, landing)
    with (
        psycopg.connect(settings.database_url("raw_data")) as raw,
        psycopg.connect(settings.database_url("clean_data")) as clean,
    ):
        key = land_payload(raw, FetchedBatch(group, "Tuesday", 1, b"{}", rows), "http://test").key
        clean_landed_batch(raw, clean, key)
    dagster_instance.add_dynamic_partitions(batch_partitions.name, [key])
    try:
        result = _materialize(settings, key, dagster_instance)
        labels = _labels(settings, key)
        again = _materialize(settings, key, dagster_instance)
        assert _labels(settings, key) == labels  # re-running gives the same labels
        with psycopg.connect(settings.database_url("clean_data")) as clean:
            verdict = judge_batch(settings, clean, MlflowClient(settings.mlflow_url), key)
    finally:
        forget_batches(settings, [key])

    joined = {(r, i, role) for r, i, role, _, _ in labels}
    assert joined <= true_pairs  # precision 100%: no decoy, no late prediction
    assert len(joined) / len(true_pairs) >= 0.95, (len(joined), len(true_pairs))  # recall
    kinds = {kind for *_, kind, _ in labels}
    assert kinds == {"sale", "relisting"}
    assert all(price > 0 for *_, price in labels)
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == REALIZED_CHECK and not check.passed  # priced at half: log 2 off
    assert f"v{version} (production): realized MAE (log) 0.693 on 60 sales" in check.description
    [check_again] = again.get_asset_check_evaluations()
    assert check_again.description == check.description
    # Production measurably worse on what it served: the verdict retrains, for that reason first.
    assert verdict.report.retrain
    assert verdict.report.reasons[0].startswith(
        "production's realized MAE (log price) on 60 labelled sales is"
    )
    figures = _figures(settings, key)
    production, shadow = figures[(version, "production")], figures[(version, "shadow")]
    assert (production["sales"], production["relistings"], shadow["sales"]) == (60, 20, 30)
    assert abs(production["mape"] - 0.5) < 1e-9 and production["coverage"] == 0.0
    assert sum(band["n"] for band in production["by_price_band"].values()) == 60


def _materialize(settings, key: str, instance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [realized_performance], partition_key=key, instance=instance,
        resources=build_resources(settings),
    )  # fmt: skip
    assert result.success
    return result


def _labels(settings, key: str) -> list[tuple]:
    with psycopg.connect(settings.database_url("clean_data")) as conn:
        return conn.execute(
            "SELECT request_id, item, role, label_kind, realized_price FROM price_labels "
            "WHERE label_batch = %s ORDER BY request_id, item, role",
            (key,),
        ).fetchall()


def _figures(settings, key: str) -> dict:
    with psycopg.connect(settings.database_url("clean_data")) as conn:
        rows = conn.execute(
            "SELECT model_version, role, figures FROM realized_performance WHERE batch_key = %s",
            (key,),
        ).fetchall()
    return {(version, role): figures for version, role, figures in rows}
