"""Train candidates on every clean batch of a stream (source group and day) through a
partition, track them in MLflow, register the best as a new version of the price model.

One MLflow parent run per training ("train <batch>") with a child run per candidate: params,
metrics, training and evaluation seconds, feature importances and the logged pyfunc model (an
MLflow 3 LoggedModel holding the same params and metrics). Every run has the train and eval
splits as dataset inputs (``realty.model.datasets``). The parent holds the data lineage, the
snapshot (batch keys, rows, content hash) and the reasons it was trained, and where the time
went (``candidates_seconds``, ``logging_seconds``). Only the best candidate's run, the one
registered, also stores the drift reference profile of its training data, which later drift
verdicts compare batches with.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import mlflow
import pandas as pd
import psycopg
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from realty.drift import ReferenceProfile
from realty.model import registry
from realty.model.datasets import ListingsDataset, listings_dataset, log_training_inputs
from realty.model.intervals import UnseenResiduals
from realty.model.price_model import log_price_model
from realty.model.training import CandidateResult, TrainingBudget, snapshot, split_for_training
from realty.model.training import train_candidates as fit_candidates
from realty.settings import Settings
from realty.store.clean import batches_through, read_clean_listings
from realty.store.residuals import residuals_through

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "reference/profile.json"
CALIBRATION_ARTIFACT = "intervals/calibration.json"  # rows per state of the intervals' calibration
EVAL_FRACTION = 0.2
METRIC_TAG = "metric."  # version tags holding the version's scores on its own eval split


@dataclass(frozen=True)
class TrainingData:
    train: pd.DataFrame
    eval: pd.DataFrame
    snapshot: dict
    unseen: UnseenResiduals | None = None  # calibrates the intervals (realty.model.intervals)


@dataclass(frozen=True)
class Trained:
    version: ModelVersion
    best: CandidateResult
    candidates: list[CandidateResult]
    snapshot: dict
    parent_run_id: str


def training_data(
    clean_conn: psycopg.Connection, key: str, seed: int, model_name: str | None = None
) -> TrainingData:
    """Every clean batch through ``key``, split so that eval holds part of each (``key`` too),
    and, given the model's name, its productions' residuals on those batches before they
    trained on them.

    Deterministic: the gate re-derives the same eval split to score the champion on it."""
    listings = read_clean_listings(clean_conn, batches_through(clean_conn, key))
    train, evaluation = split_for_training(listings, key, EVAL_FRACTION, seed)
    unseen = residuals_through(clean_conn, key, model_name) if model_name else None
    return TrainingData(train, evaluation, snapshot(listings), unseen)


def budget(settings: Settings) -> TrainingBudget:
    return TrainingBudget(
        max_rows=settings.train_max_rows,
        max_seconds=settings.train_max_seconds,
        iterations=settings.train_iterations,
        seed=settings.train_seed,
    )


def version_metrics(version: ModelVersion) -> dict[str, float]:
    return {
        name.removeprefix(METRIC_TAG): float(value)
        for name, value in version.tags.items()
        if name.startswith(METRIC_TAG)
    }


def reference_profile(version: ModelVersion) -> ReferenceProfile:
    data = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{REFERENCE_ARTIFACT}")
    return ReferenceProfile.from_dict(data)


def _log_candidate(
    result: CandidateResult, data: TrainingData, eval_set: ListingsDataset
) -> mlflow.models.model.ModelInfo:
    """The candidate's params, metrics, feature importances and model in the active run; the
    params and metrics on its LoggedModel too, its scores linked to the eval split."""
    params = {k: str(v)[:500] for k, v in result.params.items()}
    mlflow.log_params(params)
    mlflow.log_dict(result.feature_importances, "feature_importances.json")
    mlflow.log_dict(result.model.calibration.describe(), CALIBRATION_ARTIFACT)
    model = log_price_model(result.model, "model", data.train.head(5), params=params)
    mlflow.log_metrics(result.metrics, model_id=model.model_id, dataset=eval_set)
    seconds = {"train_seconds": result.train_seconds, "evaluate_seconds": result.evaluate_seconds}
    mlflow.log_metrics(seconds, model_id=model.model_id)
    return model


def _lineage_tags(data: TrainingData, trigger: str, reasons: list[str]) -> dict[str, str]:
    keys = data.snapshot["batch_keys"]
    return {
        "trigger": trigger,
        "reasons": json.dumps(reasons),
        "batch_range": f"{keys[0]}..{keys[-1]}",
        "batches": str(len(keys)),
        "rows": str(data.snapshot["rows"]),
        "train_rows": str(len(data.train)),
        "eval_rows": str(len(data.eval)),
        "snapshot_sha256": data.snapshot["content_sha256"],
    }


def train_and_register(
    settings: Settings,
    client: MlflowClient,
    data: TrainingData,
    key: str,
    trigger: str,
    reasons: list[str],
) -> Trained:
    """Fit every candidate, log each as a child run, register the best (lowest dollar MAE)."""
    mlflow.set_tracking_uri(settings.mlflow_url)
    mlflow.set_experiment(settings.price_model_name)
    tags = _lineage_tags(data, trigger, reasons)
    train_set, eval_set = listings_dataset(data.train, "train"), listings_dataset(data.eval, "eval")
    with mlflow.start_run(run_name=f"train {key}", tags=tags) as parent:
        mlflow.log_dict(data.snapshot, "snapshot.json")
        log_training_inputs(train_set, eval_set, tags["snapshot_sha256"])
        started = time.monotonic()
        results = fit_candidates(
            data.train,
            data.eval,
            budget(settings),
            interval_level=settings.price_interval_level,
            unseen=data.unseen,
        )
        best = results[0]
        fitted = time.monotonic()
        for result in results:
            with mlflow.start_run(
                run_name=result.name, nested=True, tags={**tags, "candidate": result.name}
            ):
                log_training_inputs(train_set, eval_set, tags["snapshot_sha256"])
                model = _log_candidate(result, data, eval_set)
                if result is best:  # the run registered: later verdicts compare with its data
                    reference = ReferenceProfile.from_frame(data.train).to_dict()
                    mlflow.log_dict(reference, REFERENCE_ARTIFACT)
                    registered = model
        # Where a training's time goes (bench/freshness.py reads these).
        mlflow.log_metrics(
            {
                **{f"best_{k}": v for k, v in best.metrics.items()},
                "candidates_seconds": fitted - started,
                "logging_seconds": time.monotonic() - fitted,
            }
        )
        mlflow.set_tag("best_candidate", best.name)
    because = "; ".join(reasons) or trigger
    version = registry.register(
        client,
        settings.price_model_name,
        registered,
        {**tags, "candidate": best.name, "partition": key}
        | {f"{METRIC_TAG}{k}": f"{v:.6g}" for k, v in best.metrics.items()},
        f"{best.name} trained on {tags['rows']} listings ({tags['batch_range']}) because: "
        f"{because}",
    )
    return Trained(version, best, results, data.snapshot, parent.info.run_id)
