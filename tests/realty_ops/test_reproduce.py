"""`realty reproduce VERSION` end to end: batches landed from the simulator, cleaned, a version
trained on them; the command re-cleans them from RAW and checks the version's snapshot hash,
and fails, naming the batch, once a RAW row is altered."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient

from realty.ingest.data_api import DataApiClient
from realty.ingest.landing import land_next_batch
from realty.model.reproduce import reproduce
from realty.model.versions import train_and_register, training_data
from realty.settings import REPO_ROOT, Settings
from realty.store.clean import clean_landed_batch
from realty.store.db import connect
from realty_ops.sandbox import START_TIMEOUT_S, SimulatorProcess, settings_env

MODEL = "test-reproduce-price"


@dataclass(frozen=True)
class Trained:
    settings: Settings
    keys: list[str]
    version: str


@pytest.fixture(scope="module")
def trained(mlflow_settings: Settings, tmp_path_factory) -> Iterator[Trained]:
    """Three generated batches of 1,500 rows landed and cleaned; a version trained on them."""
    simulator = SimulatorProcess(
        tmp_path_factory.mktemp("source"),
        REALTY_SOURCE_ROWS_PER_BATCH="1500",
        REALTY_SOURCE_BATCHES="3",
    ).start(timeout=START_TIMEOUT_S)
    source = {"source_url": simulator.url, "day": "reproduce"}
    model = {"price_model_name": MODEL, "train_iterations": 40}
    settings = mlflow_settings.model_copy(update=source | model)
    try:
        api = DataApiClient.from_settings(settings)
        with (
            connect("raw_data", settings, autocommit=True) as raw,
            connect("clean_data", settings) as clean,
        ):
            keys = [land_next_batch(raw, api).key for _ in range(3)]
            for key in keys:
                clean_landed_batch(raw, clean, key)
            data = training_data(clean, keys[-1], settings.train_seed)
    finally:
        simulator.stop()
    client = MlflowClient(settings.mlflow_url)
    version = train_and_register(settings, client, data, keys[-1], "test", ["reproduce"]).version
    yield Trained(settings, keys, version.version)


def _realty(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "realty_ops", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_version_is_reproduced_from_raw(trained: Trained) -> None:
    result = _realty(trained.settings, "reproduce", trained.version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{MODEL} v{trained.version} reproduced" in result.stdout
    reproduction = reproduce(trained.settings, trained.version)
    assert reproduction.reproduced == reproduction.recorded
    assert reproduction.recorded["batch_keys"] == trained.keys
    assert reproduction.recorded["rows"] > 4_000  # most of the 4,500 rows are clean


def test_an_altered_raw_row_is_not_reproduced_and_its_batch_is_named(trained: Trained) -> None:
    changed = trained.keys[1]
    with connect("clean_data", trained.settings) as clean:
        [row_index] = clean.execute(
            "SELECT min(row_index) FROM clean_listings WHERE batch_key = %s", (changed,)
        ).fetchone()
    alter = "UPDATE raw_listings SET price = %s WHERE batch_key = %s AND row_index = %s"
    with connect("raw_data", trained.settings) as raw:
        [price] = raw.execute(
            "SELECT price FROM raw_listings WHERE batch_key = %s AND row_index = %s",
            (changed, row_index),
        ).fetchone()
        raw.execute(alter, (str(float(price) + 1), changed, row_index))
    try:
        result = _realty(trained.settings, "reproduce", trained.version)
    finally:
        with connect("raw_data", trained.settings) as raw:
            raw.execute(alter, (price, changed, row_index))
    assert result.returncode == 1
    assert "content_sha256: recorded" in result.stdout
    assert f"batch {changed}: 1 listings from RAW are not in CLEAN, 1 in CLEAN" in result.stdout
    assert "is not reproduced from RAW" in result.stdout
    assert reproduce(trained.settings, trained.version).differences == []  # restored


def test_an_unknown_version_is_a_clear_error(trained: Trained) -> None:
    result = _realty(trained.settings, "reproduce", "9999")
    assert result.returncode == 1
    assert f"{MODEL} v9999" in result.stdout
