"""`realty rollout ...` as a person runs it, against the real MLflow and PostgreSQL servers."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from mlflow import MlflowClient

from realty.model import rollout
from realty.model.rollout import RolloutState
from realty.settings import Settings
from realty_ops.sandbox import settings_env
from tests.realty.model.test_registry import new_version

REALTY = Path(sys.executable).parent / "realty"


def test_status_pause_promote_and_rollback_by_hand(mlflow_settings: Settings) -> None:
    client = MlflowClient(mlflow_settings.mlflow_url)
    name = f"test-{uuid.uuid4().hex[:8]}"
    settings = mlflow_settings.model_copy(update={"price_model_name": name})
    champion, challenger = new_version(client, name), new_version(client, name)
    rollout.promote(settings, client, name, champion, "test", "champion")
    rollout.move(settings, client, name, lambda s: rollout.started(s, challenger), "start",
                 "test", "go")  # fmt: skip

    def realty(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([REALTY, "rollout", *args], env=settings_env(settings),
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    status = realty("status")
    assert status.returncode == 0, status.stderr
    assert f"challenger v{challenger} in shadow" in status.stdout
    assert realty("pause").returncode == 0
    assert rollout.read_state(client, name).paused
    promoted = realty("promote", "--reason", "looks right")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert rollout.read_state(client, name) == RolloutState(
        production=challenger, previous=champion
    )
    assert rollout.events(settings, name)[0]["reason"] == "looks right"
    assert rollout.events(settings, name)[0]["actor"] == "cli"

    assert realty("rollback").returncode == 0  # no challenger: production back to previous
    assert rollout.read_state(client, name).production == champion
    refused = realty("pause")
    assert refused.returncode == 1 and "no challenger is in rollout" in refused.stdout
