"""SHAP explanations of every new price-model version."""

import dagster as dg

from realty.store.clean import read_clean_listings
from realty.store.ledger import candidate_version
from realty_assets.assets.drift import LEARNING_GROUP
from realty_assets.assets.train import production_model
from realty_assets.partitions import batch_partitions
from realty_assets.resources import MlflowResource, PostgresResource


@dg.asset(
    partitions_def=batch_partitions,
    group_name=LEARNING_GROUP,
    kinds={"mlflow", "shap"},
    deps=[production_model],
    description="TreeSHAP on a bounded sample of batch p for the version trained on p: global "
    "ranking, beeswarm and dependence plots, and what changed against the version production "
    "had before (MLflow artifacts under shap/ of the version's run).",
)
def shap_report(
    context: dg.AssetExecutionContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    # Imported here: SHAP and matplotlib cost seconds that every run (each loads this module)
    # would pay before its first step, and only this step needs them.
    from realty.explain.versions import explain_and_log

    key, settings = context.partition_key, mlflow.settings
    client = mlflow.client()
    with postgres.connect("clean_data") as conn:
        version = candidate_version(conn, key)
        if version is None:
            raise dg.Failure(f"no candidate was trained for {key}; materialize candidate_model")
        listings = read_clean_listings(conn, [key])
    candidate = client.get_model_version(settings.price_model_name, version)
    summary = explain_and_log(settings, client, candidate, listings)
    if summary is None:
        return dg.MaterializeResult(
            metadata={"version": version, "explained": False, "why": "not a tree model"}
        )
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "explained": True,
            "top_features": summary.top_features,
            "changes": dg.MetadataValue.md(summary.changes),
            "report": dg.MetadataValue.md(summary.markdown),
        }
    )
