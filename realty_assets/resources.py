"""Resources: PostgreSQL, the data API and MLflow, configured from ``realty.settings``."""

from functools import cached_property

import dagster as dg
import mlflow
import psycopg
from mlflow import MlflowClient

from realty.ingest.data_api import DataApiClient
from realty.settings import Settings
from realty.store.db import connect_server


class PostgresResource(dg.ConfigurableResource):
    """The platform's PostgreSQL server; one database per storage role."""

    server_url: str

    def connect(self, database: str) -> psycopg.Connection:
        return connect_server(self.server_url, database)


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
        return Settings.model_validate_json(self.settings_json)

    def client(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.settings.mlflow_url)  # the fluent API used while training
        return MlflowClient(self.settings.mlflow_url)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "postgres": PostgresResource(server_url=settings.server_url),
        "data_api": DataApiResource(
            base_url=settings.data_api_url,
            group_number=settings.group_number,
            day=settings.day,
            timeout_s=settings.source_timeout_s,
            retries=settings.source_retries,
            backoff_s=settings.source_backoff_s,
        ),
        "mlflow": MlflowResource(settings_json=settings.model_dump_json()),
    }
