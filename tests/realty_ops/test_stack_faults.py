"""Fault injection against the real stack under `realty up`: kill -9 of every service, MLflow
away while serving answers, repeated signals, and `realty down` after the supervisor died.

One stack serves the tests of this module in order (starting one takes minutes on 2 cores);
how fast each service comes back is measured by bench/faults.py, not asserted here."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from realty.model import registry
from realty_ops.sandbox import (
    StackProcess,
    make_settings,
    process_groups_of_home,
    settings_env,
)
from realty_ops.stack import port_in_use, state_file
from tests.conftest import SHARED
from tests.serving.test_hot_swap import copy_version

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

DIGIT_EIGHT = SHARED / "data" / "images" / "digit2.jpg"  # an 8
STACK_ENV = {
    "REALTY_SENSOR_INTERVAL_S": "1",
    "REALTY_SERVING_POLL_INTERVAL_S": "1",
    "REALTY_SOURCE_ROWS_PER_BATCH": "2000",
    "REALTY_SOURCE_BATCHES": "1",
    "REALTY_TRAIN_ITERATIONS": "60",
    "REALTY_TRAIN_MAX_SECONDS": "20",
}
WAIT_S = 600.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    settings = make_settings(tmp_path_factory.mktemp("faults") / "home")
    running = StackProcess(settings, **STACK_ENV).start()
    try:
        running.wait_up()
        yield running
    finally:
        running.stop()


def wait_for(check, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.5)
    return result


def loaded_digits(stack: StackProcess) -> str | None:
    models = httpx.get(f"{stack.settings.serving_url}/v1/models", timeout=10).json()["models"]
    loaded = next(m for m in models if m["name"] == stack.settings.digits_model_name)["loaded"]
    return loaded and loaded["version"]


def read_digit(stack: StackProcess) -> httpx.Response:
    image = base64.b64encode(DIGIT_EIGHT.read_bytes()).decode()
    body = {"request_id": "fault", "model": "digits", "image": image}
    return httpx.post(f"{stack.settings.serving_url}/predict/", json=body, timeout=30)


def test_a_fresh_stack_trains_the_digits_model_by_itself_and_serves_it(stack) -> None:
    wait_for(lambda: loaded_digits(stack), "digits_model materialized and loaded")
    response = read_digit(stack)
    assert response.status_code == 200, response.text
    assert response.json()["prediction"] == 8


def logged_model_dir(settings, client: MlflowClient, version: str) -> Path:
    """Where MLflow's artifact store keeps the files of a version's logged model."""
    model_id = client.get_model_version(settings.digits_model_name, version).model_id
    (found,) = settings.mlflow_artifacts_dir.glob(f"*/models/{model_id}")
    return found


def test_serving_answers_while_mlflow_is_killed_and_loads_new_versions_once_it_is_back(
    stack,
) -> None:
    settings = stack.settings
    serving = stack.pids()["serving"]
    loaded = wait_for(lambda: loaded_digits(stack), "a digits version loaded")
    mlflow = stack.pids()["mlflow"]
    os.kill(mlflow, signal.SIGKILL)
    for _ in range(5):  # served from the loaded version while MLflow is away
        response = read_digit(stack)
        assert response.status_code == 200, response.text
        time.sleep(0.5)
    wait_for(lambda: stack.pids()["mlflow"] != mlflow, "mlflow restarted")
    client = MlflowClient(settings.mlflow_url)
    wait_for(lambda: client.search_registered_models() is not None, "mlflow answering")

    # A new version whose first load fails (its files away, as when MLflow vanishes during a
    # download): the poller retries it once the files are back.
    new = copy_version(client, settings.digits_model_name, settings.digits_model_name, loaded)
    files = logged_model_dir(settings, client, new)
    hidden = files.with_name(files.name + ".away")
    files.rename(hidden)
    try:
        registry.promote(client, settings.digits_model_name, new)

        def failed_on_new() -> bool:
            models = httpx.get(f"{settings.serving_url}/v1/models", timeout=10).json()["models"]
            slot = next(m for m in models if m["name"] == settings.digits_model_name)
            return bool(slot["last_failure"]) and slot["last_failure"]["version"] == new

        wait_for(failed_on_new, f"serving failed to load v{new}")
        assert loaded_digits(stack) == loaded
    finally:
        hidden.rename(files)
    wait_for(lambda: loaded_digits(stack) == new, f"v{new} loaded on a retry")
    assert read_digit(stack).json()["prediction"] == 8
    assert stack.pids()["serving"] == serving  # serving itself never went down


def test_kill_9_of_each_service_brings_it_back_and_leaves_the_others_alone(stack) -> None:
    for name in ("mlflow", "source", "dagster-webserver", "dagster-daemon", "serving", "ui"):
        before = stack.pids()
        stack.kill(name)
        after = stack.pids()
        assert after[name] != before[name]
        others = {k: v for k, v in after.items() if k != name}
        assert others == {k: v for k, v in before.items() if k != name}, name
    # PostgreSQL last: the services on it may fail while it is away; they come back too.
    stack.kill("postgres")
    stack.wait_up()
    restarts = {e["name"]: e["restarts"] for e in stack.state()["services"]}
    assert all(restarts[name] >= 1 for name in restarts), restarts
    assert read_digit(stack).status_code == 200


def stack_ports(settings) -> list[int]:
    return [
        settings.pg_port,
        settings.mlflow_port,
        settings.source_port,
        settings.dagster_port,
        settings.serving_port,
        settings.ui_port,
    ]


def test_repeated_signals_while_stopping_leave_no_child_running(stack) -> None:
    parent = stack.process
    parent.send_signal(signal.SIGTERM)  # what `realty down` sends
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):  # an exit trap, an impatient ^C
        time.sleep(0.5)
        parent.send_signal(sig)
    parent.wait(timeout=600)
    assert process_groups_of_home(stack.settings.home) == set()
    assert not any(port_in_use(stack.settings.host, port) for port in stack_ports(stack.settings))
    assert not state_file(stack.settings).exists()


def test_down_stops_a_stack_whose_supervisor_died(stack) -> None:
    settings = stack.settings
    again = StackProcess(settings, **STACK_ENV).start()
    try:
        # Killed while it starts its services: PostgreSQL and MLflow are already running.
        wait_for(lambda: again.pids().get("mlflow"), "mlflow started")
        os.kill(again.process.pid, signal.SIGKILL)
        again.process.wait()
        assert process_groups_of_home(settings.home)  # its children outlived it
        down = subprocess.run(
            [sys.executable, "-m", "realty_ops", "down"],
            env={**settings_env(settings), **STACK_ENV},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert "stopped what the stack left running: " in down.stdout
        assert "postgres" in down.stdout
        assert process_groups_of_home(settings.home) == set()
        assert not any(port_in_use(settings.host, port) for port in stack_ports(settings))
        assert not state_file(settings).exists()
    finally:
        again.stop()
    shutil.rmtree(settings.home, ignore_errors=True)
