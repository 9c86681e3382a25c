"""What was served: one window of ``raw_data.inference_log``'s price predictions, per model
version that answered (production or canary; shadow rows answered nobody).

Per version: listings answered, the error rate (listings it failed to price), latency
quantiles, the missing fraction of each field clients sent, and a drift report of what it saw
against the data it was trained on (the version's own reference profile): the input profile
(PSI of the numeric fields and of status and state, unseen states, cities and zip codes) and
the output profile, its predictions against its training prices (PSI of the log price, the
shift of the median). The report is ``realty.drift``'s, so served traffic and ingested batches
are judged by the same measures and thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from mlflow import MlflowClient

from realty.drift import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET, DriftReport, drift_report
from realty.model.versions import reference_profile
from realty.settings import Settings
from realty.verdict import thresholds

PRICE_ROUTE = "/v1/price/predict"
FIELDS = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)

ANSWERED_ROWS = """
SELECT model_version, latency_ms, prediction, listing FROM inference_log
WHERE model_name = %s AND route = %s AND role IN ('production', 'canary')
  AND logged_at >= %s AND logged_at < %s
"""


@dataclass(frozen=True)
class ServedProfile:
    version: str
    listings: int
    errors: int
    latency_ms: dict[str, float]  # p50, p95, p99
    missing: dict[str, float]  # per field: the share of listings without it
    predictions: dict[str, float]  # p10, p50, p90 of the prices answered
    drift: DriftReport  # inputs and outputs against the version's training data

    @property
    def error_rate(self) -> float:
        return self.errors / self.listings if self.listings else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "listings": self.listings,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms,
            "missing": self.missing,
            "predictions": self.predictions,
            "drift": self.drift.to_dict(),
        }


def served_window(
    settings: Settings,
    conn: psycopg.Connection,
    client: MlflowClient,
    start: datetime,
    end: datetime,
) -> list[ServedProfile]:
    """The price model's answered predictions logged in [start, end), one profile per version."""
    name = settings.price_model_name
    rows = conn.execute(ANSWERED_ROWS, (name, PRICE_ROUTE, start, end)).fetchall()
    frame = pd.DataFrame(rows, columns=["version", "latency_ms", "prediction", "listing"])
    return [
        _profile(settings, client, str(version), answered)
        for version, answered in frame.groupby("version", sort=True)
    ]


def _profile(
    settings: Settings, client: MlflowClient, version: str, answered: pd.DataFrame
) -> ServedProfile:
    listings = pd.DataFrame(list(answered["listing"]), columns=list(FIELDS))
    # Inputs are every listing received; outputs the prices answered (NaN where it failed).
    served = listings.assign(**{TARGET: answered["prediction"].to_numpy(dtype="float64")})
    reference = reference_profile(client.get_model_version(settings.price_model_name, version))
    return ServedProfile(
        version=version,
        listings=len(answered),
        errors=int(served[TARGET].isna().sum()),
        latency_ms=_quantiles(answered["latency_ms"], {"p50": 50, "p95": 95, "p99": 99}),
        missing={field: float(listings[field].isna().mean()) for field in FIELDS},
        predictions=_quantiles(served[TARGET], {"p10": 10, "p50": 50, "p90": 90}),
        drift=drift_report(reference, served, thresholds(settings)),
    )


def _quantiles(values: pd.Series, levels: dict[str, float]) -> dict[str, float]:
    present = values.dropna().to_numpy(dtype="float64")
    if not len(present):
        return {}
    return {label: float(np.percentile(present, level)) for label, level in levels.items()}
