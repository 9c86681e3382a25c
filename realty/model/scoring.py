"""Batch deployment: the production model's price for every for_sale listing of a batch."""

from __future__ import annotations

import pandas as pd
import psycopg
from mlflow.entities.model_registry import ModelVersion

from realty.model import registry
from realty.store.clean import read_clean_listings
from realty.store.db import copy_frame


def score_batch(
    clean_conn: psycopg.Connection, key: str, name: str, production: ModelVersion
) -> pd.DataFrame:
    """Predict and store (replacing earlier predictions of the batch); returns the rows."""
    listings = read_clean_listings(clean_conn, [key])
    for_sale = listings[listings["status"] == "for_sale"]
    model = registry.load_price_model(name, production.version)
    predictions = pd.DataFrame(
        {
            "batch_key": key,
            "row_index": for_sale["row_index"].to_numpy(),
            "predicted_price": model.predict(None, for_sale) if len(for_sale) else [],
            "model_name": name,
            "model_version": production.version,
        }
    )
    with clean_conn.transaction(), clean_conn.cursor() as cur:
        cur.execute("DELETE FROM batch_predictions WHERE batch_key = %s", (key,))
        copy_frame(cur, "batch_predictions", predictions)
    return predictions
