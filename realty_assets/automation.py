"""What drives the loop.

- ``source_sensor`` asks the data API for its next batch, lands it, and requests the ingest run
  of every landed batch of its stream; the cron schedule an Airflow DAG for the course would
  declare (``*/5 * * * *``) can pace fetching instead. A fetch advances the source's counter,
  so the payload is landed before anything else; a batch landed by the schedule, or by a tick
  that crashed after landing, is still processed, exactly once (the run key is the batch key).
  It asks for the next batch only once the loop has caught up with the last one, so every
  verdict is judged against the production model of the batches before it.
- The ingest run carries the whole chain: raw → clean → drift verdict → (candidate → gate →
  SHAP → scoring). ``candidate_model`` trains only when the verdict it follows says retrain;
  otherwise it yields nothing and the steps after it are skipped. One run per batch: launching
  a run costs a process that loads the code location, seconds that a second run would repeat.
- ``drift_sensor`` reads each verdict once its run is over: a keep verdict requests the scoring
  run; a retrain verdict whose chain did not run (drift_report materialized on its own, or a
  failed training) requests the train run (candidate → gate → SHAP → scoring), tagged with the
  verdict's reasons.
- ``freshness_sensor`` requests a retrain with the reason "stale: ..." when production was
  trained too many batches or hours ago, drift or not.
"""

import json

import dagster as dg

from realty import freshness
from realty.data_api import DataApiError, day_slug, parse_batch_key
from realty.decisions import candidate_version
from realty.drift import retrain_trigger
from realty.landing import LandedBatch, land_next_batch, landed_keys
from realty.registry import rollback
from realty.settings import get_settings
from realty_assets.assets.drift import drift_report
from realty_assets.assets.explain import shap_report
from realty_assets.assets.ingest import clean_batch, raw_batch
from realty_assets.assets.score import batch_predictions
from realty_assets.assets.train import (
    INGEST_JOB,
    REASONS_TAG,
    TRIGGER_TAG,
    candidate_model,
    production_model,
)
from realty_assets.partitions import batch_partitions
from realty_assets.resources import DataApiResource, MlflowResource, PostgresResource

# Ingest runs queue one at a time (dagster.yaml limits this tag), so batches are cleaned in
# landing order and cross-batch de-duplication is deterministic.
SERIAL_TAGS = {"realty/serial": "ingest"}

LEARNING_CHAIN = (candidate_model, production_model, shap_report, batch_predictions)
ingest_job = dg.define_asset_job(
    INGEST_JOB,
    selection=dg.AssetSelection.assets(raw_batch, clean_batch, drift_report, *LEARNING_CHAIN),
    tags=SERIAL_TAGS,
    description="Check a landed batch's RAW rows, clean it into CLEAN, judge its drift; when "
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
FOLLOW_UP_TAG = "realty/follow_up"  # on runs the learning-loop sensors request
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _active_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun | None:
    records = instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES, tags=tags), limit=1)
    return records[0].dagster_run if records else None


def _chain_ran(conn, verdict: freshness.VerdictRow) -> bool:
    """Did the retrain verdict's own run train on it (the ingest run's candidate_model)?"""
    return verdict.retrain and candidate_version(conn, verdict.key) is not None


def _loop_busy(
    instance: dg.DagsterInstance, postgres: PostgresResource, data_api: DataApiResource
) -> str | None:
    """Why the loop has not caught up with its stream's newest batch, or None if it has."""
    run = _active_run(instance, SERIAL_TAGS)
    if run is not None:
        return f"run {run.job_name} of {run.tags.get('dagster/partition', '?')} is not done"
    with postgres.connect("clean_data") as conn:
        newest = freshness.newest_verdict(conn, data_api.group_number, data_api.day)
        if newest is None or _chain_ran(conn, newest):
            return None
    followed = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/partition": newest.key, FOLLOW_UP_TAG: "drift"}), limit=1
    )
    return None if followed else f"the drift verdict of {newest.key} has no follow-up run yet"


def _in_stream(key: str, data_api: DataApiResource) -> bool:
    group, day, _ = parse_batch_key(key)
    return (group, day) == (data_api.group_number, day_slug(data_api.day))


@dg.op(description="Ask the data API for its next batch and land the payload in RAW.")
def fetch_next_batch(
    context: dg.OpExecutionContext, postgres: PostgresResource, data_api: DataApiResource
) -> None:
    with postgres.connect("raw_data") as conn:
        landed = land_next_batch(conn, data_api.client())
    if landed is None:
        context.log.info("the source has delivered every batch")
    else:
        context.log.info(f"landed {landed.key} ({landed.row_count} rows); source_sensor ingests it")


@dg.job(description="Fetch and land one batch (the schedule's target).")
def fetch_batch_job() -> None:
    fetch_next_batch()


@dg.op(description="Swap the price model's aliases 'production' and 'previous'.")
def swap_production_and_previous(context: dg.OpExecutionContext, mlflow: MlflowResource) -> None:
    name = mlflow.settings.price_model_name
    now, before = rollback(mlflow.client(), name)
    context.log.info(f"{name}: production is v{now} (previous: v{before})")


@dg.job(description="Roll the price model back: production ← previous (run again to undo).")
def rollback_job() -> None:
    swap_production_and_previous()


source_schedule = dg.ScheduleDefinition(
    name="source_schedule",
    job=fetch_batch_job,
    cron_schedule=get_settings().ingest_cron,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Fetch one batch on the course API's cadence (the Airflow DAG's schedule). "
    "Off by default: source_sensor asks the source itself; turn this on to pace by cron instead.",
)


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Asks the data API for its next batch, lands it, and requests the ingest run of "
    "every landed batch of its stream that has none yet. Stops asking once the source says it "
    "is done.",
)
def source_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, data_api: DataApiResource
) -> dg.SensorResult | dg.SkipReason:
    busy = _loop_busy(context.instance, postgres, data_api)
    with postgres.connect("raw_data") as conn:
        if busy:
            landed, outcome = None, f"waiting for the loop to catch up ({busy})"
        else:
            landed, outcome = _land_next(context, conn, data_api)
        keys = [key for key in landed_keys(conn) if _in_stream(key, data_api)]
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new_keys = [key for key in keys if key not in known]
    if not new_keys:
        return dg.SkipReason(f"{outcome}; every landed batch has its run")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, partition_key=key) for key in new_keys],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new_keys)],
        cursor=landed.key if landed else context.cursor,
    )


def _land_next(context, conn, data_api: DataApiResource) -> tuple[LandedBatch | None, str]:
    try:
        landed = land_next_batch(conn, data_api.client())
        return landed, _describe(landed)
    except DataApiError as error:
        # Keep ingesting what is already landed; the next tick asks the source again.
        context.log.warning(f"data API unavailable: {error}")
        return None, f"data API unavailable ({error})"


def _describe(landed: LandedBatch | None) -> str:
    if landed is None:
        return "the source has delivered every batch"
    if not landed.new:
        return f"the source re-sent {landed.key}, which was landed before"
    return f"landed {landed.key} ({landed.row_count:,} rows)"


@dg.sensor(
    jobs=[train_job, score_job],
    minimum_interval_seconds=get_settings().sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads each drift verdict once its run is over: a keep verdict requests the "
    "scoring run of its batch; a retrain verdict whose own run did not train on it (drift_report "
    "materialized alone, or a failed training) requests the train run (candidate → gate → SHAP "
    "→ scoring).",
)
def drift_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    requests, cursor, waiting = [], context.cursor, None
    with postgres.connect("clean_data") as conn:
        for verdict in freshness.verdicts_after(conn, int(context.cursor or 0)):
            run = _active_run(context.instance, {"dagster/partition": verdict.key})
            if run is not None:  # its chain may still be running; judge it when it is over
                waiting = f"waiting for run {run.job_name} of {verdict.key}"
                break
            if not _chain_ran(conn, verdict):
                requests.append(_follow_up(verdict))
            cursor = str(verdict.seq)
    skipped = None if requests else waiting or "every verdict's chain ran in its own run"
    return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=skipped)


def _follow_up(verdict: freshness.VerdictRow) -> dg.RunRequest:
    job = train_job if verdict.retrain else score_job
    tags = {FOLLOW_UP_TAG: "drift"}
    if verdict.retrain:
        trigger = retrain_trigger(verdict.reasons)
        tags |= {TRIGGER_TAG: trigger, REASONS_TAG: json.dumps(verdict.reasons)[:4000]}
    return dg.RunRequest(
        run_key=f"{job.name}-{verdict.key}",
        partition_key=verdict.key,
        job_name=job.name,
        tags=tags,
    )


@dg.sensor(
    job=train_job,
    minimum_interval_seconds=get_settings().sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a retrain (reason 'stale: ...') when production was trained too many "
    "batches or hours ago, even without drift.",
)
def freshness_sensor(
    context: dg.SensorEvaluationContext,
    postgres: PostgresResource,
    mlflow: MlflowResource,
    data_api: DataApiResource,
) -> dg.RunRequest | dg.SkipReason:
    busy = _loop_busy(context.instance, postgres, data_api)
    if busy:
        return dg.SkipReason(f"waiting for the loop to catch up ({busy})")
    with postgres.connect("clean_data") as conn:
        stale = freshness.staleness(conn, mlflow.settings)
    if stale.reason is None:
        return dg.SkipReason(stale.status)
    return dg.RunRequest(
        run_key=f"stale-{stale.latest_key}",
        partition_key=stale.latest_key,
        tags={TRIGGER_TAG: "stale", REASONS_TAG: json.dumps([stale.reason])},
    )
