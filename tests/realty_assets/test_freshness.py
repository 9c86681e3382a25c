"""The freshness checks against real PostgreSQL, a real MLflow server and real Dagster runs:
evaluated inside the jobs that materialize their assets, and by their sensor on its ticks."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from realty.ingest.data_api import DataApiClient, batch_key
from realty.ingest.landing import land_next_batch
from realty_assets import jobs, sensors
from realty_assets.assets.ingest import raw_batch
from realty_assets.checks import (
    LANDING_CHECK,
    VERDICTS_CHECK,
    batch_landed_recently,
    freshness_checks_sensor,
)
from tests.realty_assets.loop import ASSETS, Loop, judge_job


def _evaluation(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _reported(loop: Loop) -> dict[str, dg.AssetCheckEvaluation] | str:
    """One tick of the checks' sensor: the evaluations it reports, or why it skipped."""
    result = loop.evaluate(freshness_checks_sensor)
    if isinstance(result, dg.SkipReason):
        return result.skip_message
    return {event.check_name: event for event in result.asset_events}


def _land_next(loop: Loop) -> dg.RunRequest:
    """Source ticks and a fetch run: the ingest request of the loop's newest batch (other tests'
    landed batches without a partition yet are requested too; they are not this loop's
    business)."""
    prefix = batch_key(loop.settings.group_number, loop.settings.day, 0)[:-3]
    requests = loop.source_tick()
    [ingest] = [r for r in requests if r.partition_key.startswith(prefix)]
    return ingest


def _ingest_next(loop: Loop, job: str | None = None) -> dg.ExecuteInProcessResult:
    """The ingest run the source sensor requests for the loop's next batch, or a run of ``job``
    on that batch in its place (the sensor names the ingest job on its request)."""
    ingest = _land_next(loop)
    if job is not None:
        ingest = dg.RunRequest(
            run_key=ingest.run_key, partition_key=ingest.partition_key, job_name=job
        )
    return loop.run(ingest, "")


def _land_minutes_ago(loop: Loop, minutes: int) -> None:
    """Pretend the stream's batches landed ``minutes`` ago (the clock, not the data, moves)."""
    with psycopg.connect(loop.settings.database_url("raw_data")) as conn:
        conn.execute(
            "UPDATE raw_batches SET fetched_at = now() - make_interval(mins => %s) "
            "WHERE group_number = %s AND day = %s",
            (minutes, loop.settings.group_number, loop.settings.day),
        )


@pytest.fixture
def make_loop(mlflow_settings, dagster_instance, start_simulator):
    def make(day: str, **updates) -> Loop:
        simulator = start_simulator(REALTY_SOURCE_ROWS_PER_BATCH="3000", REALTY_SOURCE_BATCHES="3")
        settings = mlflow_settings.model_copy(
            update={
                "source_url": simulator.url,
                "day": day,
                "ingest_cron": "*/5 * * * *",
                "train_iterations": 60,
                "train_max_seconds": 20.0,
                **updates,
            }
        )
        return Loop(settings, dagster_instance)

    return make


def test_landing_check_fails_after_two_schedule_periods_without_a_batch(make_loop) -> None:
    loop = make_loop("freshlanding", price_model_name="test-fresh-landing")
    check_only = dg.define_asset_job(
        "landing_check", selection=dg.AssetSelection.checks(batch_landed_recently)
    )
    # raw_batch with its checks, as in every ingest run (without the rest of the ingest run,
    # whose drift verdict would hold the source sensor until it has its follow-up run).
    raw_only = dg.define_asset_job("raw_only", selection=dg.AssetSelection.assets(raw_batch))
    defs = dg.Definitions(
        assets=ASSETS, asset_checks=[batch_landed_recently], jobs=[check_only, raw_only],
        resources=loop.resources,
    )  # fmt: skip
    assert batch_landed_recently.check_keys <= jobs.ingest_job.selection.resolve_checks(
        defs.resolve_asset_graph()
    )

    nothing = defs.resolve_job_def("landing_check").execute_in_process(instance=loop.instance)
    evaluation = _evaluation(nothing, LANDING_CHECK)
    assert not evaluation.passed and evaluation.description == "no batch has landed yet"

    landed = defs.resolve_job_def("raw_only").execute_in_process(
        instance=loop.instance, partition_key=_land_next(loop).partition_key
    )
    evaluation = _evaluation(landed, LANDING_CHECK)
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["hours_since_last_batch"].value < 0.1
    assert evaluation.metadata["schedule_period_minutes"].value == 5

    # Sixteen minutes later two ticks of */5 have passed with nothing landed.
    _land_minutes_ago(loop, 16)
    reported = _reported(loop)
    landing = reported[LANDING_CHECK]
    assert not landing.passed and "no batch in the last two periods" in landing.description
    assert 0.26 < landing.metadata["hours_since_last_batch"].value < 0.3
    assert landing.severity == dg.AssetCheckSeverity.ERROR

    # The sensor reports again only when an outcome changes (or a schedule period passed).
    assert _reported(loop) == "the freshness checks' outcomes are unchanged this period"

    # A source that has delivered everything is not late.
    settings = loop.settings
    client = DataApiClient(settings.data_api_url, settings.group_number, settings.day)
    with psycopg.connect(loop.settings.database_url("raw_data"), autocommit=True) as conn:
        while land_next_batch(conn, client) is not None:
            pass
    _land_minutes_ago(loop, 16)
    landing = _reported(loop)[LANDING_CHECK]
    assert landing.passed and "delivered every batch" in landing.description
    assert "source_exhausted_at" in landing.metadata
    loop.tick(sensors.source_sensor)  # partitions for what was landed by hand


def test_verdicts_check_fails_when_production_ignores_too_many_retrains(make_loop) -> None:
    loop = make_loop(
        "freshverdicts", price_model_name="test-fresh-verdicts", max_ignored_verdicts=1
    )
    strict = Loop(loop.settings.model_copy(update={"promotion_margin": 0.9}), loop.instance)
    strict.cursors = loop.cursors  # one daemon, two gates: the strict one never promotes

    # b001's verdict without its chain: the drift sensor requests the train run.
    _ingest_next(loop, judge_job.name)
    [train] = loop.tick(sensors.drift_sensor)
    assert (train.job_name, train.tags["realty/trigger"]) == ("train_model", "initial")
    evaluation = _evaluation(loop.run(train, ""), VERDICTS_CHECK)
    assert evaluation.passed, evaluation.description
    assert evaluation.metadata["ignored_verdicts"].value == 0
    assert evaluation.metadata["trained_through"].value == "g1-freshverdicts-b001"

    ignored = []
    for key in ("g1-freshverdicts-b002", "g1-freshverdicts-b003"):
        result = _ingest_next(strict)  # a retrain verdict: its chain runs in the ingest run
        [(trigger,)] = loop.clean("SELECT trigger FROM model_decisions WHERE batch_key = %s", key)
        assert trigger == "drift"
        assert strict.tick(sensors.drift_sensor) == [], "no follow-up run: the chain ran"
        ignored.append(key)
        evaluation = _evaluation(result, VERDICTS_CHECK)
        [(promoted,)] = loop.clean("SELECT promoted FROM model_decisions WHERE batch_key = %s", key)
        assert promoted is False
        assert evaluation.metadata["ignored_batches"].value == ignored
        assert evaluation.metadata["production_version"].value == "1"
        assert evaluation.passed == (len(ignored) <= 1), evaluation.description

    assert "2 retrain verdicts since production v1" in evaluation.description
    verdicts = _reported(loop)[VERDICTS_CHECK]
    assert not verdicts.passed and verdicts.metadata["ignored_verdicts"].value == 2

    # A promotion resets the count: production is now trained through the newest batch.
    retrain = dg.RunRequest(
        partition_key="g1-freshverdicts-b003", tags={"realty/trigger": "manual"}
    )
    evaluation = _evaluation(loop.run(retrain, jobs.train_job.name), VERDICTS_CHECK)
    [(promoted,)] = loop.clean(
        "SELECT promoted FROM model_decisions WHERE batch_key = 'g1-freshverdicts-b003'"
    )
    assert promoted, "v1 never saw the states of b002 and b003"
    assert evaluation.passed and evaluation.metadata["ignored_verdicts"].value == 0


def test_stale_production_is_retrained_without_drift(make_loop) -> None:
    # Thresholds no batch crosses: every verdict after the initial baseline says keep.
    loop = make_loop(
        "freshstale",
        price_model_name="test-fresh-stale",
        stale_after_batches=1,
        drift_psi=1e9,
        drift_unseen_state_share=1.01,
        drift_unseen_city_share=1.01,
        drift_unseen_zip_share=1.01,
        drift_mae_increase=1e9,
        drift_missing_rate_change=1e9,
        drift_median_price_change=1e9,
    )
    _ingest_next(loop)  # b001: the initial baseline, trained in its ingest run
    assert loop.tick(sensors.freshness_sensor) == []

    _ingest_next(loop)  # b002: kept
    [score] = loop.tick(sensors.drift_sensor)
    assert score.job_name == "score_batch"
    assert loop.tick(sensors.freshness_sensor) == [], "waits for the verdict's follow-up"
    loop.run(score, "")

    [stale] = loop.tick(sensors.freshness_sensor)
    assert (stale.partition_key, stale.tags["realty/trigger"]) == ("g1-freshstale-b002", "stale")
    loop.run(stale, jobs.train_job.name)
    [(trigger, reasons, promoted)] = loop.clean(
        "SELECT trigger, reasons, promoted FROM model_decisions "
        "WHERE batch_key = 'g1-freshstale-b002'"
    )
    assert trigger == "stale" and promoted is not None
    stale_reason, *evidence = reasons
    assert stale_reason == (
        "stale: production v1 was trained through g1-freshstale-b001, 1 batches and 0.0 h ago "
        "(limit 1 batches)"
    )
    # Beside the age, what b002's verdict measured below its thresholds.
    assert [e.split(":")[0] for e in evidence] == ["largest drift since the reference"]
    assert loop.tick(sensors.freshness_sensor) == [], "b002 is retrained"
