"""What drives the loop.

- ``source_sensor`` requests the ingest run of every landed batch of its stream that has none,
  and, once the loop has caught up with the last one, a ``fetch_batch`` run that asks the data
  API for the next batch and lands it; the tick itself only reads PostgreSQL and the run
  storage, so a slow source cannot time it out. The cron schedule an Airflow DAG for the course
  would declare (``*/5 * * * *``) can pace fetching instead. A fetch advances the source's
  counter, so the fetch run lands the payload before anything else; every landed batch, by a
  sensor's fetch run or the schedule's, is ingested exactly once (the run key is the batch key).
  Fetching only once the loop has caught up means every verdict is judged against the
  production model of the batches before it.
- The ingest run carries the whole chain: raw → clean → drift verdict → (candidate → gate →
  SHAP → scoring). ``candidate_model`` trains only when the verdict it follows says retrain;
  otherwise it yields nothing and the steps after it are skipped. One run per batch: launching
  a run costs a process that loads the code location, seconds that a second run would repeat.
- ``drift_sensor`` reads each verdict once its run is over: a keep verdict requests the scoring
  run; a retrain verdict whose chain did not run (drift_report materialized on its own, or a
  failed training) requests the train run (candidate → gate → SHAP → scoring), tagged with the
  verdict's reasons.
- ``rollout_sensor`` is the rollout controller: it moves the price model's rollout itself
  (realty.model.guardrails), no run needed.
- ``freshness_sensor`` requests a retrain with the reason "stale: ..." when production was
  trained too many batches or hours ago, drift or not.
"""

import json
from datetime import UTC, datetime

import dagster as dg

from realty import freshness
from realty.drift import retrain_trigger
from realty.ingest.data_api import day_slug, parse_batch_key
from realty.ingest.landing import landed_keys, source_exhausted
from realty.settings import get_settings
from realty.store.ledger import VerdictRow, candidate_version, newest_verdict, verdicts_after
from realty_assets.jobs import fetch_batch_job, ingest_job, score_job, train_job
from realty_assets.partitions import batch_partitions
from realty_assets.resources import DataApiResource, MlflowResource, PostgresResource
from realty_assets.runs import (
    FETCH_AFTER_TAG,
    FOLLOW_UP_TAG,
    REASONS_TAG,
    SERIAL_TAGS,
    TRIGGER_TAG,
)

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
        batch = run.tags.get("dagster/partition", "the next batch")  # fetch runs have none
        return f"run {run.job_name} of {batch} is not done"
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
    jobs=[fetch_batch_job, ingest_job],
    minimum_interval_seconds=get_settings().sensor_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests the ingest run of every landed batch of its stream that has none yet "
    "(run key: the batch key); once the loop has caught up, a fetch run for the next batch. "
    "Stops asking once the source says it is done.",
)
def source_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, data_api: DataApiResource
) -> dg.SensorResult | dg.RunRequest | dg.SkipReason:
    with postgres.connect("raw_data") as conn:
        keys = [key for key in landed_keys(conn) if _in_stream(key, data_api)]
        exhausted = source_exhausted(conn, data_api.group_number, data_api.day)
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new_keys = [key for key in keys if key not in known]
    if new_keys:
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=key, partition_key=key, job_name=ingest_job.name)
                for key in new_keys
            ],
            dynamic_partitions_requests=[batch_partitions.build_add_request(new_keys)],
        )
    if exhausted:
        return dg.SkipReason("the source has delivered every batch; every landed batch has its run")
    busy = _loop_busy(context.instance, postgres, data_api)
    if busy:
        return dg.SkipReason(f"waiting for the loop to catch up ({busy})")
    return _fetch_request(context.instance, keys[-1] if keys else None, data_api)


def _fetch_request(
    instance: dg.DagsterInstance, newest: str | None, data_api: DataApiResource
) -> dg.RunRequest:
    """The fetch run of the batch after ``newest``; a retry (the fetch failed, or the source
    re-sent a landed batch) is a new attempt, so its run key is new too."""
    after = newest or f"g{data_api.group_number}-{day_slug(data_api.day)}-start"
    attempts = len(instance.get_run_records(dg.RunsFilter(tags={FETCH_AFTER_TAG: after})))
    return dg.RunRequest(
        run_key=f"fetch-after-{after}-{attempts + 1}",
        job_name=fetch_batch_job.name,
        tags={FETCH_AFTER_TAG: after},
    )


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
        tags={TRIGGER_TAG: "stale", REASONS_TAG: json.dumps(stale.reasons)},
    )


@dg.sensor(
    minimum_interval_seconds=get_settings().rollout_controller_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="The rollout controller: each tick reads the price model's live figures per arm "
    "from the inference log and moves its rollout: the next step when the bake time passed and "
    "the guardrails hold, a rollback when one fails (realty.model.guardrails).",
)
def rollout_sensor(mlflow: MlflowResource) -> dg.SkipReason:
    # It moves the aliases itself rather than request a run: a run costs a process start, and
    # a rollback should take one tick.
    from realty.model import guardrails
    from realty.model.rollout import RolloutError

    try:
        said = guardrails.control(mlflow.settings, mlflow.client(), datetime.now(UTC))
    except RolloutError as error:
        said = f"no move: {error}"
    return dg.SkipReason(said)
