"""``alert_sensor``: every asset check evaluation Dagster records becomes a verdict of
realty.alerts, which raises an alert when a check starts failing or passes again and sends it
to the webhook. The tick says what it did, so the Dagster UI shows the alerts too."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from realty import alerts
from realty.settings import get_settings
from realty_assets.resources import MlflowResource, PostgresResource

# Of an execution record's statuses (planned, succeeded, failed, skipped), the verdicts. Read by
# value: the record's class lives in dagster._core, which realty does not import.
VERDICTS = {"SUCCEEDED", "FAILED"}
HISTORY = 100  # evaluations read per check and tick: more than a tick ever adds


@dg.sensor(
    minimum_interval_seconds=get_settings().alert_interval_s,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts: a check that starts failing or passes again is recorded in "
    "clean_data.alerts and POSTed to REALTY_ALERT_WEBHOOK_URL (realty.alerts).",
)
def alert_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.SkipReason:
    after = int(context.cursor) if context.cursor else None
    evaluations = new_evaluations(context, after)
    raised = []
    with postgres.connect("clean_data", autocommit=True) as conn:
        for record in evaluations:
            if state := alerts.record(conn, evaluation(record)):
                raised.append(f"{record.key.name} {state}")
        delivered, failed = alerts.deliver(mlflow.settings, conn)
    if evaluations:
        context.update_cursor(str(max(r.id for r in evaluations)))
    return dg.SkipReason(
        f"{len(evaluations)} check evaluations read; alerts raised: {', '.join(raised) or 'none'}"
        f"; webhook: {delivered} delivered, {failed} failed"
    )


def new_evaluations(context: dg.SensorEvaluationContext, after: int | None) -> list[Any]:
    """The evaluations since ``after``, oldest first; on the first tick, each check's last
    (the history before the sensor existed is not news)."""
    storage = context.instance.event_log_storage
    found = []
    for key in context.repository_def.asset_graph.asset_check_keys:
        history = storage.get_asset_check_execution_history(key, limit=HISTORY if after else 1)
        news = [r for r in history if after is None or r.id > after]
        found += [r for r in news if r.status.value in VERDICTS]
    return sorted(found, key=lambda r: r.id)


def evaluation(record: Any) -> alerts.Evaluation:
    """An ``AssetCheckExecutionRecord`` of the event log as realty.alerts reads it."""
    check = record.event.dagster_event.event_specific_data
    return alerts.Evaluation(
        record_id=record.id,
        asset=record.key.asset_key.to_user_string(),
        check_name=record.key.name,
        partition=record.partition or "",
        passed=check.passed,
        severity=check.severity.value,
        description=check.description,
        run_id=record.run_id,
        evaluated_at=datetime.fromtimestamp(record.create_timestamp, UTC),
    )
