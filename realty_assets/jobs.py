"""The jobs of the code location: fetching one batch, the ingest run of a batch (raw → clean →
drift → learning chain), the train and score runs the sensors request, and moving a rollout by
hand."""

from typing import Literal

import dagster as dg
from pydantic import Field

from realty.ingest.data_api import DataApiError
from realty.ingest.landing import LandedBatch, PayloadQuarantined, land_next_batch
from realty_assets.assets.drift import drift_report
from realty_assets.assets.explain import shap_report
from realty_assets.assets.ingest import clean_batch, raw_batch
from realty_assets.assets.realized import realized_performance
from realty_assets.assets.score import batch_predictions
from realty_assets.assets.train import CandidateConfig, candidate_model, production_model
from realty_assets.resources import DataApiResource, MlflowResource, PostgresResource
from realty_assets.runs import SERIAL_TAGS

LEARNING_CHAIN = (candidate_model, production_model, shap_report, batch_predictions)
ingest_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets(
        raw_batch, clean_batch, realized_performance, drift_report, *LEARNING_CHAIN
    ),
    config=dg.RunConfig(ops={candidate_model.node_def.name: CandidateConfig(follow_verdict=True)}),
    tags=SERIAL_TAGS,
    description="Check a landed batch's RAW rows, clean it into CLEAN, join the sales it "
    "brings to the predictions served (late labels), judge its drift; when "
    "the verdict says retrain, train, gate, explain and score in the same run (otherwise the "
    "steps after drift_report are skipped and drift_sensor requests the scoring run).",
)
train_job = dg.define_asset_job(
    "train_model",
    selection=dg.AssetSelection.assets(*LEARNING_CHAIN),
    tags=SERIAL_TAGS,
    description="Train candidates on the batches through p, gate the best against production, "
    "explain the new version, score p with whichever model is production after the gate.",
)
score_job = dg.define_asset_job(
    "score_batch",
    selection=dg.AssetSelection.assets(batch_predictions),
    tags=SERIAL_TAGS,
    description="Score batch p's for_sale listings with the production model.",
)


def _landing_summary(landed: LandedBatch | None) -> str:
    if landed is None:
        return "the source has delivered every batch"
    if not landed.new:
        return f"the source re-sent {landed.key}, which was landed before"
    return f"landed {landed.key} ({landed.row_count:,} rows); source_sensor requests its ingest run"


@dg.op(
    description="Ask the data API for its next batch and land the payload in RAW (every answer "
    "archived first; one that is not a batch of the stream quarantined)."
)
def fetch_next_batch(
    context: dg.OpExecutionContext, postgres: PostgresResource, data_api: DataApiResource
) -> None:
    with postgres.connect("raw_data", autocommit=True) as conn:
        try:
            landed = land_next_batch(conn, data_api.client())
        except DataApiError as error:
            # Nothing was landed; what the source answered is archived, and a batch it counted
            # shows as a gap when the next one lands. source_sensor requests the next fetch run.
            raise dg.Failure(f"data API unavailable: {error}") from error
        except PayloadQuarantined as error:
            # Kept apart with its reason (the source_lossless check shows it); the loop goes on.
            context.log.warning(str(error))
            return
    context.log.info(_landing_summary(landed))


@dg.job(
    tags=SERIAL_TAGS,
    description="Fetch and land one batch (what source_sensor and the schedule request); "
    "serial with the ingest runs, so the loop takes one batch at a time.",
)
def fetch_batch_job() -> None:
    fetch_next_batch()


class RolloutMove(dg.Config):
    action: Literal["promote", "rollback", "pause", "resume"] = Field(
        description="promote: the challenger to production; rollback: the challenger out, or "
        "with none, production back to previous; pause/resume: the controller's steps"
    )
    reason: str = Field("by hand, from Dagster", description="Recorded with the move")


@dg.op(description="Move the price model's rollout by hand (one audited rollout event).")
def move_rollout(
    context: dg.OpExecutionContext, config: RolloutMove, mlflow: MlflowResource
) -> None:
    from realty.model import rollout

    settings = mlflow.settings
    change = rollout.MANUAL_MOVES[config.action]
    event = rollout.move(
        settings, mlflow.client(), settings.price_model_name, change, config.action,
        "dagster", config.reason,
    )  # fmt: skip
    context.log.info(f"{settings.price_model_name}: {event.after.describe()}")


@dg.job(description="Promote, roll back, pause or resume the price model's rollout by hand.")
def rollout_job() -> None:
    move_rollout()
