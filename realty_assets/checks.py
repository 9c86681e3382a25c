"""Freshness checks of the loop: are batches still landing, and does production follow the
retrain verdicts?

- ``batch_landed_recently`` (on ``raw_batch``) fails when no batch landed within two periods of
  ``REALTY_INGEST_CRON``.
- ``verdicts_followed`` (on ``production_model``) fails when production has ignored more than
  ``REALTY_MAX_IGNORED_VERDICTS`` retrain verdicts (docs/drift.md defines "ignored").

They run in two ways. As asset checks of their assets, they are part of the jobs that
materialize them: every ingest run checks landing, every train run checks the verdicts right
after the gate decided. And ``freshness_checks_sensor`` evaluates both on its ticks and reports
the result as a check evaluation whenever it changed or one schedule period has passed, because
what these checks watch for, batches or promotions that do *not* happen, starts no run.
"""

import json
from datetime import UTC, datetime

import dagster as dg

from realty import freshness
from realty.model import registry
from realty_assets.assets.ingest import raw_batch
from realty_assets.assets.train import production_model
from realty_assets.resources import MlflowResource, PostgresResource

LANDING_CHECK = "batch_landed_recently"
VERDICTS_CHECK = "verdicts_followed"
PRODUCTION_TAG_PARTITION = "partition"  # on each version: the batch it was trained through


def landing_outcome(postgres: PostgresResource, mlflow: MlflowResource) -> freshness.CheckOutcome:
    with postgres.connect("raw_data") as conn:
        settings = mlflow.settings
        return freshness.landing_freshness(
            conn, settings.ingest_cron, settings.group_number, settings.day
        )


def verdicts_outcome(postgres: PostgresResource, mlflow: MlflowResource) -> freshness.CheckOutcome:
    settings = mlflow.settings
    production = registry.version_by_alias(
        mlflow.client(), settings.price_model_name, registry.PRODUCTION
    )
    with postgres.connect("clean_data") as conn:
        return freshness.ignored_verdicts(
            conn,
            settings.group_number,
            settings.day,
            production.version if production else None,
            production.tags.get(PRODUCTION_TAG_PARTITION) if production else None,
            settings.max_ignored_verdicts,
        )


def _result(outcome: freshness.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed, description=outcome.description, metadata=outcome.metadata
    )


@dg.asset_check(
    asset=raw_batch,
    name=LANDING_CHECK,
    description="Fails when no batch landed within two periods of the ingest schedule "
    "(REALTY_INGEST_CRON), unless the source said it has delivered every batch.",
)
def batch_landed_recently(
    postgres: PostgresResource, mlflow: MlflowResource
) -> dg.AssetCheckResult:
    return _result(landing_outcome(postgres, mlflow))


@dg.asset_check(
    asset=production_model,
    name=VERDICTS_CHECK,
    description="Fails when more than REALTY_MAX_IGNORED_VERDICTS retrain verdicts came after "
    "production's newest training batch without producing a new production version.",
)
def verdicts_followed(postgres: PostgresResource, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _result(verdicts_outcome(postgres, mlflow))


FRESHNESS_CHECKS = [batch_landed_recently, verdicts_followed]
_EVALUATED = (
    (dg.AssetCheckKey(raw_batch.key, LANDING_CHECK), landing_outcome),
    (dg.AssetCheckKey(production_model.key, VERDICTS_CHECK), verdicts_outcome),
)


def _evaluation(key: dg.AssetCheckKey, outcome: freshness.CheckOutcome) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=outcome.passed,
        description=outcome.description,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity.ERROR,
    )


def _fingerprint(outcome: freshness.CheckOutcome) -> str:
    """What makes a new report worth writing: the verdict and which batches it is about."""
    return json.dumps([outcome.passed, outcome.metadata.get("ignored_batches")])


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the freshness checks (batch_landed_recently, verdicts_followed) and "
    "reports them whenever their outcome changes or one ingest-schedule period has passed.",
)
def freshness_checks_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, mlflow: MlflowResource
) -> dg.SensorResult | dg.SkipReason:
    now = datetime.now(UTC)
    last = json.loads(context.cursor) if context.cursor else {}
    period_start = freshness.recent_cron_ticks(mlflow.settings.ingest_cron, now, 1)[0]
    cursor, evaluations = dict(last), []
    for key, evaluate in _EVALUATED:
        outcome = evaluate(postgres, mlflow)
        name = key.to_user_string()
        fingerprint = _fingerprint(outcome)
        reported = last.get(name, {})
        stale = reported.get("at", 0.0) < period_start.timestamp()
        if fingerprint != reported.get("fingerprint") or stale:
            evaluations.append(_evaluation(key, outcome))
            cursor[name] = {"fingerprint": fingerprint, "at": now.timestamp()}
    if not evaluations:
        return dg.SkipReason("the freshness checks' outcomes are unchanged this period")
    reported = "; ".join(
        f"{e.check_name} {'passed' if e.passed else 'failed'}: {e.description}" for e in evaluations
    )
    # No run to request: the tick shows as skipped, with what it reported.
    return dg.SensorResult(
        asset_events=evaluations, cursor=json.dumps(cursor), skip_reason=f"reported {reported}"
    )
