"""The drift verdict of a batch: its data against what production was trained on,
production's error on it (prices arrive with the batch) against the error production's own
validation expects for a batch with that share of unseen zip codes, and production's realized
error on the sales of listings it priced (late labels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import psycopg
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from realty.drift import DriftReport, DriftThresholds, drift_report
from realty.labels import SALE, realized_figures
from realty.model import registry
from realty.model.intervals import UnseenResiduals
from realty.model.training import evaluate
from realty.model.versions import reference_profile, version_metrics
from realty.model_error import PerformanceDrift, RealizedError
from realty.settings import Settings
from realty.store.clean import batches_through, read_clean_listings
from realty.store.labels import labels_of_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    key: str
    report: DriftReport
    production: ModelVersion | None
    # production's errors on the batch it has not trained on: the next intervals' calibration
    unseen: UnseenResiduals | None = None


def thresholds(settings: Settings) -> DriftThresholds:
    return DriftThresholds(
        psi=settings.drift_psi,
        missing_rate_change=settings.drift_missing_rate_change,
        unseen_share=settings.drift_unseen_state_share,
        unseen_city_share=settings.drift_unseen_city_share,
        unseen_zip_share=settings.drift_unseen_zip_share,
        median_price_change=settings.drift_median_price_change,
        mae_increase=settings.drift_mae_increase,
        min_rows=settings.drift_min_rows,
    )


def judge_batch(
    settings: Settings, clean_conn: psycopg.Connection, client: MlflowClient, key: str
) -> Verdict:
    """Compare batch ``key`` with production's training data and production's error on it."""
    batch = read_clean_listings(clean_conn, [key])
    production = registry.version_by_alias(client, settings.price_model_name, registry.PRODUCTION)
    if production is None:
        return Verdict(key, drift_report(None, batch, thresholds(settings)), None)
    performance = unseen = None
    if len(batch):
        model = registry.load_price_model(settings.price_model_name, production.version)
        log_predicted, groups = model.log_prices_and_groups(batch)
        predicted = np.exp(log_predicted)
        performance = PerformanceDrift(
            batch=evaluate(batch["price"], predicted),
            validation=version_metrics(production),
        )
        if not _trained_on(clean_conn, production, key):  # a verdict run again, later
            log_price = np.log(batch["price"].to_numpy("float64"))
            unseen = UnseenResiduals(
                groups, np.abs(log_price - np.log(np.clip(predicted, 1.0, None)))
            )
    realized = realized_error(settings, clean_conn, production)
    report = drift_report(
        reference_profile(production), batch, thresholds(settings), performance, realized
    )
    return Verdict(key, report, production, unseen)


def _trained_on(clean_conn: psycopg.Connection, version: ModelVersion, key: str) -> bool:
    """Whether ``version`` was trained on batch ``key`` (its training data ran through the
    partition of its tag, in its stream)."""
    through = version.tags.get("partition")
    try:
        return through is not None and key in batches_through(clean_conn, through)
    except KeyError:  # trained on a stream this database does not hold
        return False


def realized_error(
    settings: Settings, clean_conn: psycopg.Connection, production: ModelVersion
) -> RealizedError | None:
    """Production's realized error on every sale labelled so far, once there are
    ``REALTY_REALIZED_MIN_SALES`` of them (and its validation MAE is known)."""
    labels = labels_of_version(clean_conn, settings.price_model_name, production.version)
    sales = int((labels["label_kind"] == SALE).sum())
    expected = version_metrics(production).get("mae_log")
    if sales < settings.realized_min_sales or not expected:
        return None
    return RealizedError(sales, realized_figures(labels)["mae_log"], expected)
