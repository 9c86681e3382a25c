"""The rollout controller: its decisions from figures, the figures from real inference log
rows in PostgreSQL, and a real tick of the Dagster sensor moving a real registry."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest
from mlflow import MlflowClient

from realty.model import guardrails, rollout
from realty.model.guardrails import ArmFigures, decide
from realty.model.rollout import RolloutState
from realty.settings import Settings
from realty_assets.resources import build_resources
from realty_assets.sensors import rollout_sensor
from tests.realty.model.test_registry import new_version

POLICY = Settings(
    rollout_shadow_s=60, rollout_bake_s=120, rollout_min_requests=50,
    rollout_canary_steps=[0.05, 0.5],
)  # fmt: skip
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HEALTHY = ArmFigures(500, 0, 20.0, 18.0, 0.01, 9_500)
WORSE_ON_SALES = {"labelled_sales": 30, "challenger_realized_mae": 0.4,
                  "production_realized_mae": 0.3}  # fmt: skip


def state(stage: str, share: float, age_s: float, paused: bool = False) -> RolloutState:
    started = (NOW - timedelta(seconds=age_s)).isoformat()
    return RolloutState("1", None, "2", stage, share, started, paused)


def test_steps_follow_the_policy_when_the_guardrails_hold() -> None:
    assert decide(state("shadow", 0, 30), HEALTHY, POLICY, NOW) is None  # shadow time not up
    to_canary = decide(state("shadow", 0, 61), HEALTHY, POLICY, NOW)
    assert to_canary.action == "step" and to_canary.change(state("shadow", 0, 61)).share == 0.05
    assert decide(state("canary", 0.05, 100), HEALTHY, POLICY, NOW) is None  # baking
    to_half = decide(state("canary", 0.05, 121), HEALTHY, POLICY, NOW)
    assert to_half.change(state("canary", 0.05, 121)).share == 0.5
    done = decide(state("canary", 0.5, 121), HEALTHY, POLICY, NOW)
    assert done.action == "promote"
    assert done.change(state("canary", 0.5, 121)) == RolloutState(production="2", previous="1")


def test_too_few_listings_hold_and_pause_holds_but_never_blocks_a_rollback() -> None:
    few = replace(HEALTHY, challenger_rows=49, divergence=2.0)
    assert decide(state("shadow", 0, 600), few, POLICY, NOW) is None
    assert decide(state("shadow", 0, 600, paused=True), HEALTHY, POLICY, NOW) is None
    bad = replace(HEALTHY, divergence=0.69)
    rollback = decide(state("canary", 0.05, 1, paused=True), bad, POLICY, NOW)
    assert rollback.action == "rollback" and "divergence 0.690" in rollback.reason


@pytest.mark.parametrize(
    ("figures", "failure"),
    [
        (replace(HEALTHY, challenger_errors=10), "error rate 2.0%"),
        (replace(HEALTHY, canary_p99_ms=900.0), "canary p99 900 ms"),
        (replace(HEALTHY, divergence=0.3), "divergence 0.300"),
        (replace(HEALTHY, divergence=None, agreement=0.9), "agreement 90.0% < 95.0%"),
        (replace(HEALTHY, **WORSE_ON_SALES), "realized MAE (log) 0.400 > production's 0.300"),
    ],
)
def test_each_guardrail_rolls_back_before_the_bake_time(figures, failure) -> None:
    decision = decide(state("canary", 0.05, 5), figures, POLICY, NOW)
    assert decision.action == "rollback" and failure in decision.reason
    assert decision.change(state("canary", 0.05, 5)).challenger is None


def test_realized_error_is_judged_on_enough_sales_whatever_the_steps_traffic() -> None:
    quiet = replace(HEALTHY, challenger_rows=3)  # too few listings for the live guardrails
    rollback = decide(state("shadow", 0, 5), replace(quiet, **WORSE_ON_SALES), POLICY, NOW)
    assert rollback.action == "rollback" and "on 30 sold listings" in rollback.reason
    too_few = replace(quiet, **{**WORSE_ON_SALES, "labelled_sales": 29})
    assert decide(state("shadow", 0, 5), too_few, POLICY, NOW) is None
    within = replace(HEALTHY, **{**WORSE_ON_SALES, "challenger_realized_mae": 0.33})
    assert decide(state("canary", 0.05, 5), within, POLICY, NOW) is None  # +10% allowed


def insert_labels(settings: Settings, name: str, rows: list[tuple]) -> None:
    """clean_data.price_labels rows (request_id, item, role, version, prediction, kind, sold)."""
    with psycopg.connect(settings.database_url("clean_data")) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO price_labels (request_id, item, role, model_name, model_version, "
            "predicted_at, prediction, listing_key, state, label_batch, label_kind, "
            "realized_price, labelled_at) VALUES (%s, %s, %s, %s, %s, now(), %s, "
            "%s || ':' || %s, 'TX', 'test', %s, %s, now())",
            [(r, i, role, name, v, p, r, i, kind, sold) for r, i, role, v, p, kind, sold in rows],
        )


def test_realized_figures_pair_both_arms_on_the_same_sold_listings(pg_settings) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    settings = pg_settings.model_copy(update={"price_model_name": name})
    rows = []
    for item in range(40):  # sold at 100k: production says 100k, the challenger 200k
        rows += [(name, item, "production", "1", 1e5, "sale", 1e5),
                 (name, item, "shadow", "2", 2e5, "sale", 1e5)]  # fmt: skip
    for item in range(40, 50):  # relisted, not sold: no ground truth for the guardrail
        rows += [(name, item, "production", "1", 1e5, "relisting", 3e5),
                 (name, item, "shadow", "2", 3e5, "relisting", 3e5)]  # fmt: skip
    rows += [(name, item, "production", "1", 1e5, "sale", 1e5) for item in range(50, 60)]
    insert_labels(settings, name, rows)  # ^ sales of production's answers only: no pair

    live = guardrails.figures(
        settings, name, RolloutState("1", None, "2", "shadow", 0, NOW.isoformat())
    )

    assert live.labelled_sales == 40
    assert live.challenger_realized_mae == pytest.approx(0.6931, abs=1e-3)
    assert live.production_realized_mae == pytest.approx(0.0)
    assert "realized MAE (log) 0.693" in guardrails.failed_guardrails(live, settings)[0]


def _log(settings: Settings, name: str, rows: list[tuple]) -> None:
    """Inference log rows (request_id, item, role, version, prediction, latency_ms), now;
    request ids start with the model's unique name, so no other test's rows interfere."""
    with psycopg.connect(settings.database_url("raw_data")) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO inference_log (request_id, item, logged_at, route, model_name, "
            "model_version, latency_ms, prediction, role) "
            "VALUES (%s, %s, now(), '/v1/price/predict', %s, %s, %s, %s, %s)",
            [(r, i, name, v, ms, p, role) for r, i, role, v, p, ms in rows],
        )


def test_figures_come_from_the_steps_inference_log_rows(pg_settings: Settings) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    settings = pg_settings.model_copy(update={"price_model_name": name})
    before = datetime.now(UTC)
    rows = []
    for item in range(100):  # canary answers 100 at twice production's price, 5 fail
        price = None if item < 5 else 200_000.0
        rows += [
            (name, item, "canary", "2", price, 30.0),
            (name, item, "shadow", "1", 1e5, 1.0),
        ]
    rows += [(f"{name}-p", item, "production", "1", 1e5, 10.0) for item in range(300)]
    _log(settings, name, rows)

    step = RolloutState("1", None, "2", "canary", 0.05, before.isoformat())
    live = guardrails.figures(settings, name, step)

    assert (live.challenger_rows, live.challenger_errors, live.production_rows) == (100, 5, 300)
    assert live.divergence == pytest.approx(0.6931, abs=1e-3)
    assert live.canary_p99_ms == pytest.approx(30.0) and live.production_p99_ms == pytest.approx(
        10.0
    )
    later = RolloutState("1", None, "2", "canary", 0.05, datetime.now(UTC).isoformat())
    assert guardrails.figures(settings, name, later).challenger_rows == 0  # another step's window


def test_a_sensor_tick_rolls_a_diverging_challenger_back(mlflow_settings, dagster_instance) -> None:
    client = MlflowClient(mlflow_settings.mlflow_url)
    name = f"test-{uuid.uuid4().hex[:8]}"
    settings = mlflow_settings.model_copy(update={"price_model_name": name})
    champion, challenger = new_version(client, name), new_version(client, name)
    rollout.promote(settings, client, name, champion, "test", "champion")
    rollout.move(
        settings, client, name, lambda s: rollout.started(s, challenger), "start", "test", "go"
    )
    pair = (("production", champion, 1e5), ("shadow", challenger, 2e5))
    shadowed = [(name, i, role, v, p, 5.0) for i in range(60) for role, v, p in pair]
    _log(settings, name, shadowed)

    context = dg.build_sensor_context(
        instance=dagster_instance, resources=build_resources(settings)
    )
    said = rollout_sensor(context)

    assert isinstance(said, dg.SkipReason) and "rollback" in said.skip_message
    assert rollout.read_state(client, name) == RolloutState(production=champion)
    [event, *_] = rollout.events(settings, name)
    assert (event["action"], event["actor"]) == ("rollback", "controller")
    assert event["metrics"]["divergence"] == pytest.approx(0.6931, abs=1e-3)
    assert "no rollout" in rollout_sensor(context).skip_message  # the next tick: nothing to do
