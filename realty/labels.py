"""Late labels: the realized price of a listing that was priced by the serving API and later
came back sold in a batch (docs/monitoring.md#late-labels).

A landed batch is searched for the listings that some logged price prediction was about: the
same identity (``realty.schema.listing_identity``: street, city, state, zip code), and a sign
that it changed hands after the prediction. Two kinds:

- ``sale``: status ``sold``, with no ``prev_sold_date`` or one on or after the prediction's
  day. Its price is what the house sold for: ground truth for the prediction.
- ``relisting``: listed again (``for_sale``) with a ``prev_sold_date`` on or after the
  prediction's day: it sold in between, but the price is the new asking price. Recorded and
  counted, never scored as the realized price.

Every prediction of the listing logged before the batch landed (each version and role:
production, canary, shadow) gets the label, so versions compare on the same houses. A
prediction is labelled once, by the first batch that brings its sale; re-running a batch
replaces its own labels only, so the figures come out the same.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from realty.schema import listing_identity
from realty.store.clean import read_clean_listings
from realty.store.labels import predictions_of, replace_labels

SALE, RELISTING = "sale", "relisting"
PRICE_ROUTE = "/v1/price/predict"
PRICE_BANDS = ((0, 200_000), (200_000, 500_000), (500_000, 1_000_000), (1_000_000, np.inf))


def join_labels(
    raw_conn: psycopg.Connection, clean_conn: psycopg.Connection, key: str, landed_at: datetime
) -> pd.DataFrame:
    """Label the predictions that batch ``key`` (landed at ``landed_at``) brings the sale or
    relisting of, in clean_data.price_labels; returns how many it labels."""
    candidates = _changed_hands(read_clean_listings(clean_conn, [key]))
    predictions = predictions_of(raw_conn, list(candidates["listing_key"]), landed_at)
    joined = predictions.merge(candidates, on="listing_key", how="inner")
    day = joined["predicted_at"].dt.tz_convert("UTC").dt.normalize().dt.tz_localize(None)
    sold_on = pd.to_datetime(joined["prev_sold_date"])
    sale = (joined["status"] == "sold").to_numpy()
    # A sale with no date, or either kind dated on or after the prediction's day.
    changed_after = (sold_on >= day).to_numpy() | (sale & sold_on.isna().to_numpy())
    labelled = joined[changed_after].assign(
        label_kind=np.where(sale[changed_after], SALE, RELISTING),
        label_batch=key,
        labelled_at=landed_at,
    )
    return replace_labels(clean_conn, key, labelled)


def _changed_hands(listings: pd.DataFrame) -> pd.DataFrame:
    """The batch's sold listings and relisted ones with a sale date, one row per identity (a
    sale before a relisting), with their identity key."""
    listings = listings[(listings["status"] == "sold") | listings["prev_sold_date"].notna()]
    keys = [listing_identity(row) for row in listings.to_dict(orient="records")]
    listings = listings.assign(listing_key=keys).dropna(subset=["listing_key"])
    listings = listings.sort_values("status", key=lambda s: s != "sold", kind="stable")
    columns = ["listing_key", "status", "price", "prev_sold_date", "state"]
    return listings.drop_duplicates("listing_key")[columns].rename(
        columns={"price": "realized_price"}
    )


def realized_figures(labels: pd.DataFrame) -> dict[str, Any]:
    """What the sales among ``labels`` (one version and role) say of its predictions: MAE,
    MAPE, R² and MAE in log price, interval coverage, per state and per price band, and the
    label delays."""
    sales = labels[labels["label_kind"] == SALE]
    figures = {
        "labels": len(labels),
        "sales": len(sales),
        "relistings": int((labels["label_kind"] == RELISTING).sum()),
        **_errors(sales),
    }
    if len(sales):
        delay = (sales["labelled_at"] - sales["predicted_at"]).dt.total_seconds() / 86_400
        figures["delay_days"] = {f"p{q}": float(np.percentile(delay, q)) for q in (10, 50, 90)}
        figures["by_state"] = {
            state: _errors(group) for state, group in sales.groupby("state", sort=True)
        }
        figures["by_price_band"] = {
            _band_name(low, high): _errors(band)
            for low, high in PRICE_BANDS
            if len(
                band := sales[(sales["realized_price"] >= low) & (sales["realized_price"] < high)]
            )
        }
    return figures


def _errors(sales: pd.DataFrame) -> dict[str, Any]:
    if sales.empty:
        return {"n": 0}
    truth, predicted = sales["realized_price"].to_numpy(), sales["prediction"].to_numpy()
    log_error = np.log(predicted) - np.log(truth)
    errors: dict[str, Any] = {
        "n": len(sales),
        "mae_usd": float(np.mean(np.abs(predicted - truth))),
        "mape": float(np.mean(np.abs(predicted - truth) / truth)),
        "mae_log": float(np.mean(np.abs(log_error))),
    }
    if len(sales) >= 2 and np.var(np.log(truth)) > 0:
        errors["r2_log"] = float(1 - np.mean(log_error**2) / np.var(np.log(truth)))
    bounded = sales.dropna(subset=["interval_low", "interval_high"])
    if len(bounded):
        inside = (bounded["interval_low"] <= bounded["realized_price"]) & (
            bounded["realized_price"] <= bounded["interval_high"]
        )
        errors["coverage"] = float(inside.mean())
        errors["coverage_n"] = len(bounded)
    return errors


def _band_name(low: float, high: float) -> str:
    return (
        f"{low / 1000:,.0f}k+"
        if not np.isfinite(high)
        else f"{low / 1000:,.0f}k-{high / 1000:,.0f}k"
    )
