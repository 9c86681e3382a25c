"""The cron schedule an Airflow DAG for the course would declare: fetch one batch per tick."""

import dagster as dg

from realty.settings import get_settings
from realty_assets.jobs import fetch_batch_job

source_schedule = dg.ScheduleDefinition(
    name="source_schedule",
    job=fetch_batch_job,
    cron_schedule=get_settings().ingest_cron,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Fetch one batch on the course API's cadence (the Airflow DAG's schedule). "
    "Off by default: source_sensor asks the source itself; turn this on to pace by cron instead.",
)
