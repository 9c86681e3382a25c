"""Session fixtures: real servers on 127.0.0.1, started by the same code as `realty up`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from realty.settings import Settings
from realty_ops.sandbox import SimulatorProcess, make_settings
from realty_ops.stack import Stack, service_env

SHARED = Path(__file__).resolve().parents[2] / "shared"
REALTOR_SAMPLE = SHARED / "data" / "realtor" / "realtor_sample.csv.gz"


@pytest.fixture(scope="session")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real PostgreSQL server (the embedded one) with the platform's databases migrated."""
    settings = make_settings(tmp_path_factory.mktemp("pg-home"))
    stack = Stack(settings, only=("postgres",))
    stack.start()
    yield settings
    stack.stop()


@pytest.fixture(scope="session")
def mlflow_settings(pg_settings: Settings) -> Iterator[Settings]:
    """A real MLflow tracking server on the test PostgreSQL server, artifacts served from disk."""
    import mlflow

    stack = Stack(pg_settings, only=("mlflow",))
    stack.start()
    mlflow.set_tracking_uri(pg_settings.mlflow_url)
    yield pg_settings
    stack.stop()


@pytest.fixture(scope="session")
def dagster_instance(pg_settings: Settings):
    """A Dagster instance with its storage in the test server's `dagster` database."""
    from dagster import DagsterInstance

    from realty_ops.stack import prepare_dagster_home

    prepare_dagster_home(pg_settings)
    os.environ.update(
        {
            k: v
            for k, v in service_env(pg_settings).items()
            if k.startswith(("DAGSTER", "REALTY_DAGSTER"))
        }
    )
    instance = DagsterInstance.from_config(str(pg_settings.dagster_home))
    yield instance
    instance.dispose()


def require_sample() -> Path:
    if not REALTOR_SAMPLE.exists():
        pytest.skip(f"the real realtor sample is not here ({REALTOR_SAMPLE}); ../shared is absent")
    return REALTOR_SAMPLE


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator:
    """Start simulators with the given environment; all are stopped after the test."""
    started: list[SimulatorProcess] = []

    def start(**env: str) -> SimulatorProcess:
        simulator = SimulatorProcess(tmp_path, **env).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


# ---------------------------------------------------------------- serving


@dataclass(frozen=True)
class ProductionModels:
    """What ``production_models`` registered: both models at alias ``production``."""

    settings: Settings  # the MLflow/Postgres test servers
    price_version: str  # of settings.price_model_name ("realty-price")
    digits_version: str  # of settings.digits_model_name ("digits")
    listings: pd.DataFrame  # the clean real listings the price model was trained on


@pytest.fixture(scope="session")
def production_models(mlflow_settings: Settings) -> ProductionModels:
    """Real versions of `realty-price` and `digits` under alias `production` in the test
    MLflow server, trained in about 20 s: the learning loop's `train_and_register` on 3,000 real
    listings with a 60-round budget, and the `digits_model` asset. Session-wide: tests must not
    move these aliases (register under another model name to test promotions)."""
    from realty_ops.sandbox import real_clean_listings, register_digits_model, register_price_model

    listings = real_clean_listings(3_000)
    price_version = register_price_model(mlflow_settings, listings)
    digits_version = register_digits_model(mlflow_settings)
    return ProductionModels(mlflow_settings, price_version, digits_version, listings)


@pytest.fixture(scope="session")
def serving_server(production_models: ProductionModels) -> Iterator:
    """`realty serve` (real uvicorn) on a free port of 127.0.0.1 serving `production_models`;
    `.url` is its base URL, `.settings` its settings. Stopped at the end of the session. For a
    server of your own (other settings or env), use `realty_ops.sandbox.ServingProcess` directly."""
    from realty_ops.sandbox import ServingProcess

    with ServingProcess(production_models.settings) as server:
        yield server
