"""Monitoring benchmark: the late-label join and realized performance over 1,000,000 logged
predictions, its precision and recall against known pairs, the realized coverage of real 90 %
intervals, and one served_traffic window over 100,000 rows.

In a temporary home it starts PostgreSQL and MLflow and registers a price model trained (as the
loop trains, small budget) on the first 80 % of the real sample's cleaned listings; the other
20 % are the listings that will sell. Each of them is priced by that model (real conformal
intervals at 0.9) and logged ``--repeats`` times (production) plus once as a shadow; filler
predictions of houses that never sell bring the inference log to ``--rows``. A batch then
lands (the platform's landing and cleaning) with those listings sold at their real prices, and
the clock runs over what the realized_performance asset does: the join
(``realty.labels.join_labels``) and the figures per version and role. The known pairs are every
logged prediction of a sold listing: precision is the share of joined rows among them, recall
the share of them joined. ``window_seconds``: ``realty.served.served_window`` over one hour
holding 100,000 of the logged rows.

    python bench/monitoring.py [--rows 1000000] [--repeats 20]

Writes bench/results/monitoring.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results" / "monitoring.json"
LEVEL = 0.9
WINDOW_ROWS = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    import psycopg
    from mlflow import MlflowClient

    from realty.ingest.data_api import FetchedBatch
    from realty.ingest.landing import land_payload
    from realty.labels import join_labels, realized_figures
    from realty.model import registry
    from realty.schema import LISTING_COLUMNS
    from realty.served import served_window
    from realty.store.clean import clean_landed_batch
    from realty.store.labels import labels_of_batch, landed_at, replace_performance
    from realty_ops.sandbox import real_clean_listings, register_price_model, temporary_stack

    listings = real_clean_listings().sample(frac=1.0, random_state=7).reset_index(drop=True)
    listings = listings[listings["street"].notna()]
    cut = int(len(listings) * 0.8)
    train, sold = listings.iloc[:cut], listings.iloc[cut:]
    sold = sold.drop_duplicates(subset=["street", "city", "state", "zip_code"])
    with temporary_stack(("postgres", "mlflow"), prefix="realty-bench-monitoring-") as settings:
        version = register_price_model(settings, train, iterations=200)
        model = registry.load_price_model(settings.price_model_name, version)
        posted = json.loads(sold[[c for c in LISTING_COLUMNS if c != "price"]].to_json(
            orient="records", date_format="iso"))  # fmt: skip
        priced = model.price_rows(posted, LEVEL)
        logged_at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
            hours=2
        )
        with psycopg.connect(settings.database_url("raw_data")) as raw:
            known, rows = _log(raw, settings, version, posted, priced, args, logged_at)
        with (
            psycopg.connect(settings.database_url("raw_data")) as raw,
            psycopg.connect(settings.database_url("clean_data"), autocommit=True) as clean,
        ):
            key = _land_sales(raw, clean, sold, LISTING_COLUMNS, FetchedBatch, land_payload,
                              clean_landed_batch)  # fmt: skip
            started = time.perf_counter()
            joined = join_labels(raw, clean, key, landed_at(raw, key))
            labels = labels_of_batch(clean, key)
            figures = {
                (v, role): realized_figures(group)
                for (v, role), group in labels.groupby(["model_version", "role"])
            }
            replace_performance(clean, key, settings.price_model_name, figures)
            join_seconds = time.perf_counter() - started
            pairs = set(zip(labels["request_id"], labels["item"], labels["role"], strict=True))
            started = time.perf_counter()
            window = served_window(
                settings, raw, MlflowClient(settings.mlflow_url), logged_at,
                logged_at + timedelta(hours=1),
            )  # fmt: skip
            window_seconds = time.perf_counter() - started
    production = figures[(version, "production")]
    result = {
        "logged_rows": rows,
        "label_join_seconds": round(join_seconds, 2),
        "labels": joined,
        "known_pairs": len(known),
        "join_precision": len(pairs & known) / len(pairs) if pairs else 0.0,
        "join_recall": len(pairs & known) / len(known),
        "coverage_nominal": LEVEL,
        "coverage_realized": production.get("coverage"),
        "realized_production": {k: production[k] for k in ("sales", "mae_usd", "mape", "r2_log")},
        "window_seconds": round(window_seconds, 2),
        "window_listings": sum(p.listings for p in window),
        "targets": {
            "label_join_seconds": "<= 30",
            "join_precision": 1.0,
            "join_recall": ">= 0.95",
            "coverage_realized": "0.88-0.92",
        },
        "load_average_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _log(raw, settings, version, posted, priced, args, logged_at) -> tuple[set, int]:
    """COPY the logged predictions: each sold listing ``repeats`` times and once as a shadow,
    then fillers to ``rows``; the first WINDOW_ROWS within the hour after ``logged_at``, the
    rest before it. Returns the known pairs and the rows written."""
    from realty.schema import listing_identity

    known, lines = set(), io.BytesIO()
    name, route, written = settings.price_model_name, "/v1/price/predict", 0

    def line(request_id, role, listing, price, low, high) -> None:
        nonlocal written
        hour = logged_at + timedelta(seconds=written % 3_000) if written < WINDOW_ROWS else (
            logged_at - timedelta(hours=1 + written % 48))  # fmt: skip
        record = {"request_id": request_id, "item": 0, "logged_at": hour.isoformat(),
                  "route": route, "model_name": name, "model_version": version,
                  "latency_ms": 2.0, "listing": listing, "prediction": price,
                  "interval_level": LEVEL, "interval_low": low, "interval_high": high,
                  "role": role, "listing_key": listing_identity(listing)}  # fmt: skip
        lines.write(orjson.dumps(record) + b"\n")
        written += 1

    bounds = zip(posted, priced.price, priced.low, priced.high, strict=True)
    for listing, price, low, high in bounds:
        for repeat in range(args.repeats + 1):
            role = "shadow" if repeat == args.repeats else "production"
            request_id = uuid.uuid4().hex
            line(request_id, role, listing, float(price), float(low), float(high))
            known.add((request_id, 0, role))
    filler = posted[0]
    while written < args.rows:
        never_sold = {**filler, "street": 9_000_000_000 + written}
        line(uuid.uuid4().hex, "production", never_sold, 300_000.0, 150_000.0, 600_000.0)
    with raw.cursor() as cur:
        cur.execute("CREATE TEMP TABLE incoming (record jsonb)")
        with cur.copy(
            "COPY incoming FROM STDIN (FORMAT csv, DELIMITER E'\\x1f', QUOTE E'\\x1e')"
        ) as copy:
            copy.write(lines.getvalue())
        cur.execute(
            "INSERT INTO inference_log SELECT c.* FROM incoming, "
            "jsonb_populate_record(NULL::inference_log, record) AS c"
        )
    raw.commit()
    return known, written


def _land_sales(raw, clean, sold, columns, fetched_batch, land_payload, clean_landed_batch) -> str:
    """A batch of the sold listings (status sold, no sale date: the price is the sale's)."""
    rows = sold.assign(status="sold", prev_sold_date=None)[list(columns)]
    text = [[None if pd.isna(v) else str(v) for v in row] for row in rows.to_numpy(dtype=object)]
    key = land_payload(raw, fetched_batch(1, "Tuesday", 1, b"{}", text), "http://bench").key
    clean_landed_batch(raw, clean, key)
    return key


if __name__ == "__main__":
    main()
