"""The registry helpers against a real MLflow server: versions, the gate, its record."""

from __future__ import annotations

import uuid

import mlflow
import pytest
from mlflow import MlflowClient

from realty.model import rollout
from realty.model.registry import PRODUCTION, gate, record_decision, register, version_by_alias


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [1.0] * len(model_input)


def test_gate_promotes_without_a_champion() -> None:
    decision = gate(50_000, None, margin=0.02)
    assert decision.promote and decision.reason == "no production model yet"


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted"),
    [
        (97_000, 100_000, True),
        (98_000, 100_000, True),
        (98_500, 100_000, False),
        (120_000, 100_000, False),
    ],
)
def test_gate_needs_the_margin(challenger: float, champion: float, promoted: bool) -> None:
    decision = gate(challenger, champion, margin=0.02, champion_version="3")
    assert decision.promote is promoted
    assert "v3" in decision.reason and "margin is 2%" in decision.reason
    assert decision.as_tags()["gate.decision"] == ("promoted" if promoted else "rejected")


def new_version(client: MlflowClient, name: str) -> str:
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant())
    return register(client, name, info, {"k": "v"}, "test").version


def test_a_losing_challenger_keeps_production_and_records_why(mlflow_settings) -> None:
    client = MlflowClient(mlflow_settings.mlflow_url)
    name = f"test-{uuid.uuid4().hex[:8]}"
    champion, challenger = new_version(client, name), new_version(client, name)
    rollout.promote(mlflow_settings, client, name, champion, "test", "the champion")

    decision = gate(110_000, 100_000, margin=0.02, champion_version=champion)
    record_decision(client, name, challenger, decision)

    assert version_by_alias(client, name, PRODUCTION).version == champion
    tags = client.get_model_version(name, challenger).tags
    assert tags["gate.decision"] == "rejected"
    assert tags["gate.champion_version"] == champion
    assert "does not beat production" in tags["gate.reason"]
