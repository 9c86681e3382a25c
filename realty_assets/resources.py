"""Resources: PostgreSQL, the data API and MLflow, configured from ``realty.settings``."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import dagster as dg
import psycopg

from realty.ingest.data_api import DataApiClient
from realty.settings import Settings
from realty.store.db import connect_server

if TYPE_CHECKING:
    from mlflow import MlflowClient

PG_URL_VARIABLE = "REALTY_PG_URL"


class PostgresResource(dg.ConfigurableResource):
    """The platform's PostgreSQL server; one database per storage role."""

    server_url: str

    def connect(self, database: str, autocommit: bool = False) -> psycopg.Connection:
        return connect_server(self.server_url, database, autocommit=autocommit)


class DataApiResource(dg.ConfigurableResource):
    """The course data API (or its simulator)."""

    base_url: str
    group_number: int
    day: str
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 0.5

    def client(self) -> DataApiClient:
        return DataApiClient(
            base_url=self.base_url,
            group_number=self.group_number,
            day=self.day,
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
        )


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking server and registry, with the learning loop's settings (model names,
    drift thresholds, promotion margin, training budget) as the JSON of ``Settings``."""

    settings_json: str

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_public_json(self.settings_json)

    def client(self) -> MlflowClient:
        import mlflow  # the code location loads without it (realty_assets/definitions.py)

        mlflow.set_tracking_uri(self.settings.mlflow_url)  # the fluent API used while training
        return mlflow.MlflowClient(self.settings.mlflow_url)


def _server_url(settings: Settings) -> str | dg.EnvVar:
    """The PostgreSQL URL as resource config: an ``EnvVar`` when it holds a password, so that
    the Dagster UI shows the variable's name and never its value."""
    if urlsplit(settings.server_url).password is None:
        return settings.server_url  # the embedded server: trust on 127.0.0.1, no password
    if os.environ.get(PG_URL_VARIABLE) != settings.pg_url.get_secret_value():
        raise ValueError(
            f"a PostgreSQL URL with a password must come from {PG_URL_VARIABLE} in the "
            "environment, so that Dagster reads it there and never stores it in resource config"
        )
    return dg.EnvVar(PG_URL_VARIABLE)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "postgres": PostgresResource(server_url=_server_url(settings)),
        "data_api": DataApiResource(
            base_url=settings.data_api_url,
            group_number=settings.group_number,
            day=settings.day,
            timeout_s=settings.source_timeout_s,
            retries=settings.source_retries,
            backoff_s=settings.source_backoff_s,
        ),
        "mlflow": MlflowResource(settings_json=settings.public_json()),
    }
