"""Rollout moves against a real MLflow server and PostgreSQL: aliases and stage, the audited
record, serialization under one lock, and a crash between two alias writes."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from functools import partial

import pytest
from mlflow import MlflowClient

from realty.model import rollout
from realty.model.rollout import RolloutError, RolloutState
from realty.settings import Settings
from tests.realty.model.test_registry import new_version


def _model(settings: Settings, versions: int) -> tuple[MlflowClient, str, list[str]]:
    client = MlflowClient(settings.mlflow_url)
    name = f"test-{uuid.uuid4().hex[:8]}"
    return client, name, [new_version(client, name) for _ in range(versions)]


def _move(settings, client, name, change, action="test") -> rollout.RolloutEvent:
    return rollout.move(settings, client, name, change, action, "test", f"a {action} in a test")


def _no_two_aliases_alike(state: RolloutState) -> bool:
    versions = [version for version in state.aliases().values() if version is not None]
    return len(versions) == len(set(versions))


def test_direct_promotion_and_a_swap_back(mlflow_settings: Settings) -> None:
    client, name, (first, second) = _model(mlflow_settings, 2)
    assert rollout.read_state(client, name) == RolloutState()  # no alias yet

    _move(mlflow_settings, client, name, partial(rollout.promoted, version=first))
    _move(mlflow_settings, client, name, partial(rollout.promoted, version=second))
    assert rollout.read_state(client, name).aliases() == {
        "production": second, "previous": first, "challenger": None,
    }  # fmt: skip

    swap = _move(mlflow_settings, client, name, rollout.rolled_back, "rollback")
    assert (swap.after.production, swap.after.previous) == (first, second)
    assert rollout.read_state(client, name) == swap.after
    with pytest.raises(RolloutError, match="production already"):
        _move(mlflow_settings, client, name, partial(rollout.promoted, version=first))


def test_a_release_is_production_first_then_the_challenger_when_staged(
    mlflow_settings: Settings,
) -> None:
    client, name, (first, second, third) = _model(mlflow_settings, 3)
    staged = mlflow_settings.model_copy(update={"rollout": "staged"})
    direct = mlflow_settings.model_copy(update={"rollout": "direct"})

    rollout.release(staged, client, name, first, "test", "the first version")
    assert rollout.read_state(client, name) == RolloutState(production=first)
    shadow = rollout.release(staged, client, name, second, "test", "won the gate").after
    assert (shadow.production, shadow.challenger, shadow.stage) == (first, second, "shadow")
    _move(mlflow_settings, client, name, rollout.aborted, "abort")
    rollout.release(direct, client, name, third, "test", "won the gate")
    assert rollout.read_state(client, name) == RolloutState(production=third, previous=first)


def test_a_staged_rollout_is_one_audited_event_per_move(mlflow_settings: Settings) -> None:
    client, name, (champion, challenger) = _model(mlflow_settings, 2)
    _move(mlflow_settings, client, name, partial(rollout.promoted, version=champion), "promote")
    shadow = _move(
        mlflow_settings, client, name, partial(rollout.started, version=challenger), "start"
    )
    in_shadow = datetime.now(UTC)
    _move(mlflow_settings, client, name, partial(rollout.stepped, share=0.05), "step")
    state = rollout.read_state(client, name)
    assert (state.production, state.challenger, state.stage, state.share) == (
        champion, challenger, "canary", 0.05,
    )  # fmt: skip
    _move(mlflow_settings, client, name, rollout.promoted, "promote")

    final = rollout.read_state(client, name)
    assert final == RolloutState(production=challenger, previous=champion)
    recorded = rollout.events(mlflow_settings, name)
    assert [event["action"] for event in recorded] == ["promote", "step", "start", "promote"]
    for newer, older in itertools.pairwise(recorded):  # one chain, no gap
        assert newer["before"] == older["after"]
        assert newer["applied_at"] >= older["applied_at"]
    assert rollout.state_at(mlflow_settings, name, in_shadow) == shadow.after
    assert rollout.state_at(mlflow_settings, name, datetime.now(UTC)) == final


def test_a_move_that_makes_no_sense_writes_nothing(mlflow_settings: Settings) -> None:
    client, name, (only,) = _model(mlflow_settings, 1)
    _move(mlflow_settings, client, name, partial(rollout.promoted, version=only))
    for change in (rollout.promoted, rollout.aborted, rollout.swapped):
        with pytest.raises(RolloutError):
            _move(mlflow_settings, client, name, change)
    assert len(rollout.events(mlflow_settings, name)) == 1


def test_concurrent_movers_are_serialized(mlflow_settings: Settings) -> None:
    """Two movers toggling pause at once: under the lock each move reads the state the one
    before it wrote, so the record is one unbroken chain and no toggle is lost."""
    client, name, (champion, challenger) = _model(mlflow_settings, 2)
    _move(mlflow_settings, client, name, partial(rollout.promoted, version=champion))
    _move(mlflow_settings, client, name, partial(rollout.started, version=challenger))

    def toggle() -> None:
        mover = MlflowClient(mlflow_settings.mlflow_url)
        for _ in range(4):
            _move(mlflow_settings, mover, name, lambda s: rollout.paused(s, not s.paused))

    movers = [threading.Thread(target=toggle) for _ in range(2)]
    for mover in movers:
        mover.start()
    for mover in movers:
        mover.join()

    recorded = rollout.events(mlflow_settings, name)
    assert len(recorded) == 10
    for newer, older in itertools.pairwise(recorded):
        assert newer["before"] == older["after"]
    assert rollout.read_state(client, name).paused is False  # 8 toggles


CRASHING_MOVER = """
import os, sys
from functools import partial
from mlflow import MlflowClient
from realty.model import rollout
from realty.settings import Settings

settings = Settings.from_public_json(sys.argv[1])
def crash(write):
    print(write, flush=True)
    os._exit(9)  # no cleanup at all, as a kill -9 after this write
rollout.move(settings, MlflowClient(settings.mlflow_url), sys.argv[2], rollout.promoted,
             "promote", "test", "the challenger wins", on_write=crash)
"""


def test_a_crash_between_two_alias_writes_is_completed_by_the_next_move(
    mlflow_settings: Settings,
) -> None:
    client, name, (champion, challenger) = _model(mlflow_settings, 2)
    _move(mlflow_settings, client, name, partial(rollout.promoted, version=champion))
    _move(mlflow_settings, client, name, partial(rollout.started, version=challenger))

    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_MOVER, mlflow_settings.public_json(), name],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert crashed.returncode == 9, crashed.stderr
    assert crashed.stdout.strip() == "delete challenger"  # the first of the promotion's writes
    halfway = rollout.read_state(client, name)
    assert halfway.production == champion and halfway.challenger is None
    assert _no_two_aliases_alike(halfway)
    [interrupted, *_] = rollout.events(mlflow_settings, name)
    assert interrupted["applied_at"] is None

    assert rollout.recover(mlflow_settings, client, name) == interrupted["event_id"]
    assert rollout.read_state(client, name) == RolloutState(
        production=challenger, previous=champion
    )
    assert rollout.events(mlflow_settings, name)[0]["applied_at"] is not None
    assert rollout.recover(mlflow_settings, client, name) is None
