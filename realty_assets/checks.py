"""Checks of the loop as a whole: are batches still landing, whole, and does production follow
the retrain verdicts?

- ``batch_landed_recently`` (on ``raw_batch``) fails when no batch landed within two periods of
  ``REALTY_INGEST_CRON``.
- ``source_lossless`` (on ``raw_batch``) fails (error) while batch numbers of the stream never
  arrived (open gaps), and as a warning while answers of the source are quarantined.
- ``verdicts_followed`` (on ``production_model``) fails when production has ignored more than
  ``REALTY_MAX_IGNORED_VERDICTS`` retrain verdicts (docs/drift.md defines "ignored").

They run in two ways. As asset checks of their assets, they are part of the jobs that
materialize them: every ingest run checks landing and the source, every train run checks the
verdicts right after the gate decided. And ``freshness_checks_sensor`` evaluates them on its
ticks and reports the result as a check evaluation whenever it changed or one schedule period
has passed, because what these checks watch for, batches or promotions that do *not* happen and
answers that were kept apart, starts no run.
"""

import json
from datetime import UTC, datetime

import dagster as dg

from realty import freshness
from realty.ingest.archive import SourceRecord, source_record
from realty_assets.assets.ingest import raw_batch
from realty_assets.assets.train import production_model
from realty_assets.resources import MlflowResource, PostgresResource

LANDING_CHECK = "batch_landed_recently"
VERDICTS_CHECK = "verdicts_followed"
SOURCE_CHECK = "source_lossless"
QUARANTINE_SHOWN = 10  # newest quarantined answers listed in the check's metadata
PRODUCTION_TAG_PARTITION = "partition"  # on each version: the batch it was trained through


def landing_outcome(postgres: PostgresResource, mlflow: MlflowResource) -> freshness.CheckOutcome:
    with postgres.connect("raw_data") as conn:
        settings = mlflow.settings
        return freshness.landing_freshness(
            conn, settings.ingest_cron, settings.group_number, settings.day
        )


def verdicts_outcome(postgres: PostgresResource, mlflow: MlflowResource) -> freshness.CheckOutcome:
    from realty.model import registry

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


def source_outcome(postgres: PostgresResource, mlflow: MlflowResource) -> freshness.CheckOutcome:
    settings = mlflow.settings
    with postgres.connect("raw_data") as conn:
        return _lossless_outcome(source_record(conn, settings.group_number, settings.day))


def _lossless_outcome(record: SourceRecord) -> freshness.CheckOutcome:
    gaps = [f"{gap.first_batch}-{gap.last_batch}" for gap in record.open_gaps]
    quarantined = record.quarantined
    kept = (
        f"{len(quarantined)} answers quarantined in raw_data.source_responses, the newest "
        f"(answer {quarantined[-1].response_id}): {quarantined[-1].reason}"
        if quarantined
        else "no answer quarantined"
    )
    if gaps:
        description = (
            f"{record.missing_batches} batches never arrived (gaps {', '.join(gaps)}; "
            f"{record.open_gaps[0].reason}); {kept}"
        )
    else:
        description = f"every batch number arrived; {kept}"
    rows = [
        f"| {q.response_id} | {q.received_at:%Y-%m-%d %H:%M:%S} | {q.status_code} | "
        f"{q.body_bytes:,} | {q.reason.replace('|', '/')} |"
        for q in quarantined[-QUARANTINE_SHOWN:]
    ]
    table = ["| answer | received | status | bytes | reason |", "|---|---|---:|---:|---|", *rows]
    metadata = {
        "missing_batches": record.missing_batches,
        "open_gaps": gaps,
        "quarantined_answers": len(quarantined),
        "failed_calls": record.failed_calls,
        "quarantined": dg.MetadataValue.md("\n".join(table) if rows else "_none_"),
    }
    return freshness.CheckOutcome(
        not gaps and not quarantined, description, metadata, warning=not gaps
    )


def _severity(outcome: freshness.CheckOutcome) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if outcome.warning else dg.AssetCheckSeverity.ERROR


def _result(outcome: freshness.CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata=outcome.metadata,
        severity=_severity(outcome),
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
    asset=raw_batch,
    name=SOURCE_CHECK,
    description="Fails while batch numbers of the stream never arrived (gaps: a failed call the "
    "source had counted, a quarantined answer), and as a warning while answers of the source "
    "are quarantined (kept in raw_data.source_responses with the reason).",
)
def source_lossless(postgres: PostgresResource, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _result(source_outcome(postgres, mlflow))


@dg.asset_check(
    asset=production_model,
    name=VERDICTS_CHECK,
    description="Fails when more than REALTY_MAX_IGNORED_VERDICTS retrain verdicts came after "
    "production's newest training batch without producing a new production version.",
)
def verdicts_followed(postgres: PostgresResource, mlflow: MlflowResource) -> dg.AssetCheckResult:
    return _result(verdicts_outcome(postgres, mlflow))


LOOP_CHECKS = [batch_landed_recently, source_lossless, verdicts_followed]
_EVALUATED = (
    (dg.AssetCheckKey(raw_batch.key, LANDING_CHECK), landing_outcome),
    (dg.AssetCheckKey(raw_batch.key, SOURCE_CHECK), source_outcome),
    (dg.AssetCheckKey(production_model.key, VERDICTS_CHECK), verdicts_outcome),
)
# What makes a new report worth writing, beside the verdict: which batches or answers it is about.
_FINGERPRINT_KEYS = ("ignored_batches", "open_gaps", "quarantined_answers")


def _evaluation(key: dg.AssetCheckKey, outcome: freshness.CheckOutcome) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=outcome.passed,
        description=outcome.description,
        metadata=outcome.metadata,
        severity=_severity(outcome),
    )


def _fingerprint(outcome: freshness.CheckOutcome) -> str:
    return json.dumps([outcome.passed, *map(outcome.metadata.get, _FINGERPRINT_KEYS)])


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Evaluates the loop's checks (batch_landed_recently, source_lossless, "
    "verdicts_followed) and reports them whenever their outcome changes or one ingest-schedule "
    "period has passed.",
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
