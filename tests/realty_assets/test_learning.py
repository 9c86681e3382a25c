"""The learning loop through Dagster against real PostgreSQL and a real MLflow server: the
source, drift and freshness sensors evaluated against the real instance, and the runs they
request executed there, as the daemon would."""

from __future__ import annotations

import dagster as dg
import mlflow
import psycopg
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from realty.model import registry, rollout
from realty.verdict import judge_batch
from realty_assets import jobs, sensors
from realty_assets.assets.digits import digits_model
from realty_assets.resources import build_resources
from tests.realty_assets.loop import Loop


@pytest.fixture
def loop(mlflow_settings, dagster_instance, start_simulator) -> Loop:
    simulator = start_simulator(REALTY_SOURCE_ROWS_PER_BATCH="3000", REALTY_SOURCE_BATCHES="3")
    settings = mlflow_settings.model_copy(
        update={
            "source_url": simulator.url,
            "day": "learning",
            "price_model_name": "test-loop-price",
            "train_iterations": 80,
            "train_max_seconds": 30.0,
            "stale_after_batches": 1,
        }
    )
    return Loop(settings, dagster_instance)


def test_three_batches_through_the_loop(loop: Loop) -> None:
    client = MlflowClient(loop.settings.mlflow_url)
    name = loop.settings.price_model_name

    # The initial baseline trains in the batch's own ingest run: no follow-up run.
    assert loop.step() == [("ingest_batch", "g1-learning-b001")]
    [(trigger, reasons, promoted, production)] = loop.clean(
        "SELECT trigger, reasons, promoted, production_version FROM model_decisions "
        "WHERE batch_key = 'g1-learning-b001'"
    )
    assert (trigger, reasons, promoted) == ("initial", ["initial baseline"], True)
    assert registry.version_by_alias(client, name, registry.PRODUCTION).version == production
    version = client.get_model_version(name, production)
    assert version.tags["trigger"] == "initial" and "initial baseline" in version.description
    [(scored, scored_version)] = loop.clean(
        "SELECT count(*), min(model_version) FROM batch_predictions "
        "WHERE batch_key = 'g1-learning-b001'"
    )
    assert scored > 0 and scored_version == production
    shap_files = {a.path for a in client.list_artifacts(version.run_id, "shap")}
    assert {"shap/ranking.json", "shap/beeswarm.png", "shap/explanation.md"} <= shap_files
    ranking = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/shap/ranking.json")
    assert ranking["features"], "the ranking names the features"

    # The batch production was trained on does not drift from production.
    with psycopg.connect(loop.settings.database_url("clean_data")) as conn:
        again = judge_batch(loop.settings, conn, client, "g1-learning-b001")
    assert not again.report.retrain, again.report.reasons
    assert again.unseen is None  # production trained on it: no errors on unseen data to keep

    for expected in ("g1-learning-b002", "g1-learning-b003"):
        [ingest] = loop.source_tick()
        assert (ingest.job_name, ingest.partition_key) == ("ingest_batch", expected)
        ingested = loop.run(ingest, "")
        [(retrain, reasons)] = loop.clean(
            "SELECT retrain, reasons FROM drift_reports WHERE batch_key = %s", expected
        )
        assert retrain == bool(reasons)  # a verdict always says why it retrains
        trained = loop.clean("SELECT trigger FROM model_decisions WHERE batch_key = %s", expected)
        if retrain:  # trained, gated, explained and scored in the ingest run itself
            assert trained == [("drift",)]
            assert loop.tick(sensors.drift_sensor) == []
        else:  # the chain was skipped; the scoring run follows
            assert trained == []
            skipped = {event.step_key for event in ingested.get_step_skipped_events()}
            assert {"production_model", "shap_report", "batch_predictions"} <= skipped
            # Until the verdict has its follow-up run, no fetch run asks for the next batch.
            assert loop.tick(sensors.source_sensor) == []
            [follow_up] = loop.tick(sensors.drift_sensor)
            assert follow_up.job_name == "score_batch"
            loop.run(follow_up, "")
        production = registry.version_by_alias(client, name, registry.PRODUCTION)
        [(for_sale,)] = loop.clean(
            "SELECT count(*) FROM clean_listings WHERE batch_key = %s AND status = 'for_sale'",
            expected,
        )
        scored = loop.clean(
            "SELECT model_version, count(*) FROM batch_predictions WHERE batch_key = %s "
            "GROUP BY model_version",
            expected,
        )
        assert scored == ([(production.version, for_sale)] if for_sale else [])

    # The generator's batches move to other states, as the real source's do.
    verdicts = loop.clean("SELECT reasons FROM drift_reports WHERE batch_key LIKE 'g1-learning-%%'")
    assert any("never seen in training" in reason for (reasons,) in verdicts for reason in reasons)

    # Each verdict kept production's errors on the batch it had not seen; candidates trained
    # after that calibrate their intervals on them, the first one on its eval split.
    unseen = loop.clean(
        "SELECT u.batch_key, u.model_version, cardinality(u.residuals), cardinality(u.states), "
        "d.production_version, (d.report->'performance'->'batch'->>'mae_log')::float, "
        "(SELECT avg(r) FROM unnest(u.residuals) r), "
        "(SELECT count(*) FROM clean_listings c WHERE c.batch_key = u.batch_key) "
        "FROM unseen_residuals u JOIN drift_reports d USING (batch_key) "
        "WHERE u.batch_key LIKE 'g1-learning-%%' ORDER BY u.batch_key"
    )
    assert [row[0] for row in unseen] == ["g1-learning-b002", "g1-learning-b003"]
    for _, version, residuals, states, judged_by, mae_log, mean, listings in unseen:
        assert residuals == states == listings and version == judged_by
        assert mean == pytest.approx(mae_log, rel=1e-4)
    calibrations = {
        key: client.get_run(client.get_model_version(name, version).run_id).data.params[
            "interval_calibration"
        ]
        for key, version in loop.clean(
            "SELECT batch_key, candidate_version FROM model_decisions "
            "WHERE batch_key LIKE 'g1-learning-%%'"
        )
    }
    assert calibrations.pop("g1-learning-b001").endswith("eval rows")
    for key, calibration in calibrations.items():
        batches = 1 if key == "g1-learning-b002" else 2
        assert calibration.endswith(f"residuals on {batches} unseen batches"), calibration


def _retrain_by_hand(loop: Loop, key: str = "g1-learning-b001") -> None:
    loop.run(
        dg.RunRequest(partition_key=key, tags={"realty/trigger": "manual"}),
        jobs.train_job.name,
    )


def test_a_worse_challenger_is_not_promoted(loop: Loop) -> None:
    loop.step()  # lands and trains the first batch unless an earlier test did
    client = MlflowClient(loop.settings.mlflow_url)
    name = loop.settings.price_model_name
    champion = registry.version_by_alias(client, name, registry.PRODUCTION).version
    strict = Loop(loop.settings.model_copy(update={"promotion_margin": 0.9}), loop.instance)

    _retrain_by_hand(strict)

    assert registry.version_by_alias(client, name, registry.PRODUCTION).version == champion
    [(promoted, reason, candidate)] = loop.clean(
        "SELECT promoted, decision_reason, candidate_version FROM model_decisions "
        "WHERE batch_key = 'g1-learning-b001'"
    )
    assert promoted is False and "does not beat production" in reason
    assert client.get_model_version(name, candidate).tags["gate.decision"] == "rejected"


def test_a_winner_under_a_staged_rollout_becomes_the_challenger(loop: Loop) -> None:
    loop.step()
    client = MlflowClient(loop.settings.mlflow_url)
    name = loop.settings.price_model_name
    champion = rollout.read_state(client, name).production
    staged = loop.settings.model_copy(update={"rollout": "staged", "promotion_margin": -1.0})

    _retrain_by_hand(Loop(staged, loop.instance))

    state = rollout.read_state(client, name)
    assert state.production == champion  # production keeps serving
    assert state.challenger not in (None, champion) and state.stage == "shadow"
    [start, *_] = rollout.events(loop.settings, name)
    assert (start["action"], start["actor"]) == ("start", "gate")
    assert "beats production" in start["reason"]
    rollout.move(loop.settings, client, name, rollout.aborted, "rollback", "test", "cleanup")


def test_rollout_job_rolls_production_back_to_previous(loop: Loop) -> None:
    loop.step()
    client = MlflowClient(loop.settings.mlflow_url)
    name = loop.settings.price_model_name
    if len(client.search_model_versions(f"name = '{name}'")) < 2:
        _retrain_by_hand(loop)
    older, newer = sorted(
        (v.version for v in client.search_model_versions(f"name = '{name}'")), key=int
    )[-2:]
    if rollout.read_state(client, name).production != older:
        rollout.promote(loop.settings, client, name, older, "test", "setting up")
    rollout.promote(loop.settings, client, name, newer, "test", "setting up")

    result = jobs.rollout_job.execute_in_process(
        run_config=dg.RunConfig({"move_rollout": jobs.RolloutMove(action="rollback")}),
        instance=loop.instance,
        resources={"mlflow": loop.resources["mlflow"]},
    )

    assert result.success
    assert registry.version_by_alias(client, name, registry.PRODUCTION).version == older
    assert registry.version_by_alias(client, name, registry.PREVIOUS).version == newer


def test_digits_model_becomes_production(mlflow_settings, dagster_instance) -> None:
    settings = mlflow_settings.model_copy(update={"digits_model_name": "test-digits"})
    result = dg.materialize(
        [digits_model], instance=dagster_instance, resources=build_resources(settings)
    )
    assert result.success
    client = MlflowClient(settings.mlflow_url)
    version = registry.version_by_alias(client, "test-digits", registry.PRODUCTION)
    assert float(version.tags["metric.accuracy"]) >= 0.97
    model = mlflow.sklearn.load_model("models:/test-digits@production")
    images, labels = load_digits(return_X_y=True)
    assert (model.predict(images[:200]) == labels[:200]).mean() >= 0.97
