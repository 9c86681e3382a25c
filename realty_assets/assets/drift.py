"""The drift verdict of every batch against production's training data and error."""

import dagster as dg

from realty.store.ledger import store_verdict
from realty.store.residuals import replace_residuals
from realty_assets.assets.ingest import clean_batch
from realty_assets.assets.realized import realized_performance
from realty_assets.partitions import batch_partitions
from realty_assets.resources import MlflowResource, PostgresResource

LEARNING_GROUP = "learning"


@dg.asset(
    partitions_def=batch_partitions,
    group_name=LEARNING_GROUP,
    kinds={"postgres", "mlflow"},
    # After the late labels of the batch: the verdict weighs production's realized error.
    deps=[clean_batch, realized_performance],
    description="Does batch p call for a retrain? Effect sizes (PSI, Wasserstein, missing "
    "rates), unseen geography, price drift and production's error on the batch, with "
    "human-readable reasons (clean_data.drift_reports).",
)
def drift_report(
    context: dg.AssetExecutionContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from realty.verdict import judge_batch

    with postgres.connect("clean_data") as conn:
        verdict = judge_batch(mlflow.settings, conn, mlflow.client(), context.partition_key)
        store_verdict(conn, verdict)
        if verdict.unseen is not None:
            replace_residuals(
                conn, verdict.key, mlflow.settings.price_model_name,
                verdict.production.version, verdict.unseen,
            )  # fmt: skip
    report = verdict.report
    return dg.MaterializeResult(
        metadata={
            "retrain": report.retrain,
            "reasons": report.reasons,
            "top_reason": report.reasons[0] if report.reasons else "no drift",
            "production_version": verdict.production.version if verdict.production else "none",
            "rows": report.rows,
            "report": dg.MetadataValue.md(report.to_markdown()),
        }
    )
