"""Candidates trained when there is a reason, and the champion/challenger gate."""

import json
from collections.abc import Iterator, Mapping

import dagster as dg
import pandas as pd

from realty.drift import retrain_trigger
from realty.store.ledger import (
    StoredVerdict,
    candidate_version,
    record_gate,
    record_training,
    stored_verdict,
)
from realty_assets.assets.drift import LEARNING_GROUP, drift_report
from realty_assets.partitions import batch_partitions
from realty_assets.resources import MlflowResource, PostgresResource
from realty_assets.runs import REASONS_TAG, TRIGGER_TAG


class CandidateConfig(dg.Config):
    """Whether a materialization of candidate_model trains unconditionally or follows the
    batch's drift verdict."""

    follow_verdict: bool = False  # the ingest run sets it: train only on a retrain verdict


def _why(tags: Mapping[str, str], verdict: StoredVerdict | None) -> tuple[str, list[str]]:
    """Why this training happens: the requesting sensor's tags, else the batch's verdict."""
    if TRIGGER_TAG in tags:
        return tags[TRIGGER_TAG], json.loads(tags.get(REASONS_TAG, "[]"))
    if verdict and verdict.retrain:
        return retrain_trigger(verdict.reasons), verdict.reasons
    return "manual", ["requested by hand"]


def _candidates_table(results) -> str:
    rows = [
        {
            "candidate": r.name,
            "mae_usd": round(r.metrics["mae_usd"]),
            "r2_log": round(r.metrics["r2_log"], 4),
            "rmse_log": round(r.metrics["rmse_log"], 4),
            "seconds": round(r.train_seconds, 1),
        }
        for r in results
    ]
    return pd.DataFrame(rows).to_markdown(index=False)


@dg.asset(
    partitions_def=batch_partitions,
    group_name=LEARNING_GROUP,
    kinds={"mlflow", "catboost", "scikitlearn"},
    deps=[drift_report],
    description="CatBoost, scikit-learn and baseline candidates trained on every clean batch "
    "through p, tracked in MLflow (a parent run, a child run each); the best becomes a new "
    "version of the price model. Materialized only when there is a reason to retrain: with "
    "follow_verdict (the ingest run's config) it follows the drift verdict, and yields nothing "
    "(the gate, SHAP and scoring steps after it are skipped) when the verdict says keep.",
    output_required=False,
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: CandidateConfig,
    postgres: PostgresResource,
    mlflow: MlflowResource,
) -> Iterator[dg.MaterializeResult]:
    from realty.model.versions import train_and_register, training_data

    key, settings = context.partition_key, mlflow.settings
    with postgres.connect("clean_data") as conn:
        verdict = stored_verdict(conn, key)
        if config.follow_verdict and not (verdict and verdict.retrain):
            kept = f"v{verdict.production_version}" if verdict else "(no verdict)"
            context.log.info(
                f"kept production {kept} because the drift verdict of {key} found no reason "
                "to retrain"
            )
            return
        trigger, reasons = _why(context.run.tags, verdict)
        context.log.info(f"training because ({trigger}): {reasons}")
        data = training_data(conn, key, settings.train_seed, settings.price_model_name)
        trained = train_and_register(settings, mlflow.client(), data, key, trigger, reasons)
        record_training(conn, key, trained, trigger, reasons)
    yield dg.MaterializeResult(
        metadata={
            "version": trained.version.version,
            "best_candidate": trained.best.name,
            "trigger": trigger,
            "reasons": reasons,
            "mae_usd": trained.best.metrics["mae_usd"],
            "r2_log": trained.best.metrics["r2_log"],
            "train_rows": len(data.train),
            "eval_rows": len(data.eval),
            "snapshot_sha256": trained.snapshot["content_sha256"],
            "candidates": dg.MetadataValue.md(_candidates_table(trained.candidates)),
            "mlflow_run": dg.MetadataValue.url(
                f"{settings.mlflow_url}/#/experiments/"
                f"{mlflow.client().get_run(trained.parent_run_id).info.experiment_id}"
                f"/runs/{trained.parent_run_id}"
            ),
        }
    )


@dg.asset(
    partitions_def=batch_partitions,
    group_name=LEARNING_GROUP,
    kinds={"mlflow"},
    deps=[candidate_model],
    description="Champion/challenger gate: the candidate of p and production scored on the same "
    "evaluation data; the alias 'production' moves only if the candidate wins by the margin.",
)
def production_model(
    context: dg.AssetExecutionContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from realty.model.gate import challenge
    from realty.model.versions import training_data

    key, settings = context.partition_key, mlflow.settings
    client = mlflow.client()
    with postgres.connect("clean_data") as conn:
        version = candidate_version(conn, key)
        if version is None:
            raise dg.Failure(f"no candidate was trained for {key}; materialize candidate_model")
        candidate = client.get_model_version(settings.price_model_name, version)
        data = training_data(conn, key, settings.train_seed)
        outcome = challenge(settings, client, candidate, data)
        record_gate(conn, key, outcome)
    decision = outcome.decision
    return dg.MaterializeResult(
        metadata={
            "promoted": decision.promote,
            "decision": decision.reason,
            "candidate_version": version,
            "production_version": outcome.production_version,
            "challenger_mae_usd": decision.challenger_mae_usd,
            "champion_mae_usd": decision.champion_mae_usd,
            "production_mae_usd": outcome.production_metrics["mae_usd"],
            "production_r2_log": outcome.production_metrics["r2_log"],
        }
    )
