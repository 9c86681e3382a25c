"""Batch deployment: production's price for every for_sale listing of each batch."""

import dagster as dg

from realty_assets.assets.drift import LEARNING_GROUP, drift_report
from realty_assets.assets.train import production_model
from realty_assets.partitions import batch_partitions
from realty_assets.resources import MlflowResource, PostgresResource


@dg.asset(
    partitions_def=batch_partitions,
    group_name=LEARNING_GROUP,
    kinds={"postgres"},
    deps=[drift_report, production_model],
    description="Predicted prices of batch p's for_sale listings by the production model, with "
    "its version (clean_data.batch_predictions).",
)
def batch_predictions(
    context: dg.AssetExecutionContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    from realty.model import registry
    from realty.model.scoring import score_batch

    name = mlflow.settings.price_model_name
    production = registry.version_by_alias(mlflow.client(), name, registry.PRODUCTION)
    if production is None:
        raise dg.Failure(f"{name} has no production version yet to score {context.partition_key}")
    with postgres.connect("clean_data") as conn:
        predictions = score_batch(conn, context.partition_key, name, production)
    prices = predictions["predicted_price"]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(predictions),
            "model_version": production.version,
            "median_predicted_price": float(prices.median()) if len(prices) else 0.0,
        }
    )
