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
from realty.drift import retrain_trigger
from realty.ingest.data_api import DataApiError, day_slug, parse_batch_key
from realty.ingest.landing import LandedBatch, land_next_batch, landed_keys
from realty.settings import get_settings
from realty.store.ledger import VerdictRow, candidate_version, newest_verdict, verdicts_after
from realty_assets.jobs import ingest_job, score_job, train_job
from realty_assets.partitions import batch_partitions
from realty_assets.resources import DataApiResource, MlflowResource, PostgresResource
from realty_assets.runs import FOLLOW_UP_TAG, REASONS_TAG, SERIAL_TAGS, TRIGGER_TAG

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _active_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun | None:
    records = instance.get_run_records(dg.RunsFilter(statuses=ACTIVE_STATUSES, tags=tags), limit=1)
    return records[0].dagster_run if records else None


def _chain_ran(conn, verdict: VerdictRow) -> bool:
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
        newest = newest_verdict(conn, data_api.group_number, data_api.day)
        if newest is None or _chain_ran(conn, newest):
            return None
    followed = instance.get_run_records(
        dg.RunsFilter(tags={"dagster/partition": newest.key, FOLLOW_UP_TAG: "drift"}), limit=1
    )
    return None if followed else f"the drift verdict of {newest.key} has no follow-up run yet"


def _in_stream(key: str, data_api: DataApiResource) -> bool:
    group, day, _ = parse_batch_key(key)
    return (group, day) == (data_api.group_number, day_slug(data_api.day))


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
        for verdict in verdicts_after(conn, int(context.cursor or 0)):
            run = _active_run(context.instance, {"dagster/partition": verdict.key})
            if run is not None:  # its chain may still be running; judge it when it is over
                waiting = f"waiting for run {run.job_name} of {verdict.key}"
                break
            if not _chain_ran(conn, verdict):
                requests.append(_follow_up(verdict))
            cursor = str(verdict.seq)
    skipped = None if requests else waiting or "every verdict's chain ran in its own run"
    return dg.SensorResult(run_requests=requests, cursor=cursor, skip_reason=skipped)


def _follow_up(verdict: VerdictRow) -> dg.RunRequest:
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
