"""What drives ingestion: a sensor that asks the data API for its next batch, and the cron
schedule an Airflow DAG for the course would declare (``*/5 * * * *``).

Both land the payload in RAW before anything else (a fetch advances the source's counter).
The sensor then turns every landed batch into a partition and a run, so a batch landed by the
schedule, or by a tick that crashed after landing, is still processed, exactly once (the run
key is the batch key).
"""

import dagster as dg

from realty.data_api import DataApiError
from realty.landing import LandedBatch, land_next_batch, landed_keys
from realty.settings import get_settings
from realty_assets.assets.ingest import clean_batch, raw_batch
from realty_assets.partitions import batch_partitions
from realty_assets.resources import DataApiResource, PostgresResource

# Ingest runs queue one at a time (dagster.yaml limits this tag), so batches are cleaned in
# landing order and cross-batch de-duplication is deterministic.
SERIAL_TAGS = {"realty/serial": "ingest"}

ingest_job = dg.define_asset_job(
    "ingest_batch",
    selection=dg.AssetSelection.assets(raw_batch, clean_batch),
    tags=SERIAL_TAGS,
    description="Spread a landed batch into RAW rows and clean it into CLEAN.",
)


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
    "every landed batch that has none yet. Stops asking once the source says it is done.",
)
def source_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, data_api: DataApiResource
) -> dg.SensorResult | dg.SkipReason:
    with postgres.connect("raw_data") as conn:
        try:
            landed = land_next_batch(conn, data_api.client())
            outcome = _describe(landed)
        except DataApiError as error:
            # Keep ingesting what is already landed; the next tick asks the source again.
            context.log.warning(f"data API unavailable: {error}")
            landed, outcome = None, f"data API unavailable ({error})"
        keys = landed_keys(conn)
    known = set(context.instance.get_dynamic_partitions(batch_partitions.name))
    new_keys = [key for key in keys if key not in known]
    if not new_keys:
        return dg.SkipReason(f"{outcome}; every landed batch has its run")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=key, partition_key=key) for key in new_keys],
        dynamic_partitions_requests=[batch_partitions.build_add_request(new_keys)],
        cursor=landed.key if landed else context.cursor,
    )


def _describe(landed: LandedBatch | None) -> str:
    if landed is None:
        return "the source has delivered every batch"
    if not landed.new:
        return f"the source re-sent {landed.key}, which was landed before"
    return f"landed {landed.key} ({landed.row_count:,} rows)"
